"""The benchmark scripts' own measuring code (the scripts themselves run outside CI: they take minutes)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
throughput = pytest.importorskip("throughput")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_kernel_bound_records_the_steps_matmuls(precision):
    """The dense AE's training step has exactly five matmuls (encoder and decoder forward; the decoder's
    weight and input gradients; the encoder's weight gradient: no gradient for the images), and the
    replayed calls keep the autocast dtype."""
    w = dict(throughput.WORKLOADS["seed-ae"], batch=16)
    b = throughput.kernel_bound(w, (1, 28, 28), precision, reps=2)
    assert sorted(c["op"] for c in b["calls"]) == ["addmm", "addmm", "mm", "mm", "mm"]
    assert {c["dtype"] for c in b["calls"]} == {"bfloat16" if precision == "bf16" else "float32"}
    assert b["seconds_per_image"] > 0


def test_kernel_bound_covers_convolutions_forward_and_backward():
    w = dict(throughput.WORKLOADS["seed-cnn"], batch=4)
    ops = [c["op"] for c in throughput.kernel_bound(w, (3, 32, 32), "fp32", reps=1)["calls"]]
    assert ops.count("convolution") == 3 and ops.count("convolution_backward") == 3
    assert {"addmm", "mm"} <= set(ops)


def _cell(labels, variant, seed, settings, err):
    return {"labels": labels, "variant": variant, "seed": seed, "settings": settings, "test_error": err,
            "wall_seconds": 1.0, "bf16_matmul_gflops": 1}


def test_cells_are_filed_under_the_variant_whose_settings_they_ran():
    """cifar-250 took self-adaptive thresholds after cells were recorded with the fixed bar: the old recipe
    cells become fixed-bar ones and the self-adaptive ones the recipe's, so no figure is shown under settings
    it did not run and nothing is measured again; a cell recorded before an option existed still counts."""
    few = pytest.importorskip("cifar_few_labels")
    fixed = few.cell_settings(250, "fixed-bar", 0)
    old = {k: v for k, v in fixed.items() if k not in ("threshold", "threshold_momentum")}  # before the option
    results = {"cells": {"250-recipe-s0": _cell(250, "recipe", 0, old, 0.45),
                         "250-self-adaptive-s0": _cell(250, "self-adaptive", 0,
                                                       few.cell_settings(250, "self-adaptive", 0), 0.40),
                         "250-no-recon-s0": _cell(250, "no-recon", 0, few.cell_settings(250, "no-recon", 0), 0.5),
                         "250-recipe-s1": _cell(250, "recipe", 1, {**fixed, "lr": 9.0}, 0.9)}}
    assert few.refile(results) == 2  # the old recipe cell and the self-adaptive one
    cells = results["cells"]
    assert cells["250-fixed-bar-s0"]["test_error"] == 0.45 and cells["250-fixed-bar-s0"]["filed_as"] == "250-recipe-s0"
    assert cells["250-recipe-s0"]["test_error"] == 0.40 and cells["250-recipe-s0"]["variant"] == "recipe"
    assert "250-self-adaptive-s0" not in cells and cells["250-no-recon-s0"]["variant"] == "no-recon"
    assert cells["250-recipe-s1"]["test_error"] == 0.9  # runs what no variant runs now: kept, shown nowhere
    table = "\n".join(few.table_lines(results, lambda seed: True))
    assert "| 250 | recipe | 0 | 40.00 |" in table and "| 250 | fixed-bar | 0 | 45.00 |" in table
    assert "90.00" not in table
    assert few.canonical(250, "self-adaptive") == "recipe" and few.canonical(4000, "fixed-bar") == "recipe"
    assert few.canonical(4000, "self-adaptive") == "self-adaptive"
    assert few.refile(results) == 0  # filed already: nothing moves again


def test_a_cell_whose_place_is_taken_keeps_its_key_and_is_not_counted_as_moved():
    few = pytest.importorskip("cifar_few_labels")
    fixed = few.cell_settings(250, "fixed-bar", 0)
    results = {"cells": {"250-recipe-s0": _cell(250, "recipe", 0, fixed, 0.45),
                         "250-fixed-bar-s0": _cell(250, "fixed-bar", 0, fixed, 0.46)}}
    assert few.refile(results) == 0
    assert results["cells"]["250-recipe-s0"]["test_error"] == 0.45
    assert results["cells"]["250-fixed-bar-s0"]["test_error"] == 0.46


def test_the_precision_benchmark_times_both_precisions_and_says_what_auto_picks():
    precision = pytest.importorskip("precision")
    e = precision.measure(("fast-ae", "mlp_ae", {"code_dim": 8}, (1, 8, 8), 16), rounds=1, seconds=0.0)
    assert e["fp32_step_ms"] > 0 and e["bf16_step_ms"] > 0
    assert e["bf16_over_fp32"] == pytest.approx(e["bf16_step_ms"] / e["fp32_step_ms"], rel=0.1, abs=0.02)
    f = precision.cpu_features()
    assert f["auto_picks"] == ("bf16" if f["native_bf16"] else "fp32")


def test_the_few_label_cells_stay_bf16_measurements_under_a_preset_that_says_auto():
    few = pytest.importorskip("cifar_few_labels")
    from aeclass import build_config
    assert build_config(preset="cifar-4000").precision == "auto"
    for labels, variant in ((4000, "recipe"), (250, "no-recon"), (250, "supervised")):
        assert few.cell_settings(labels, variant, 0)["precision"] == "bf16", (labels, variant)
