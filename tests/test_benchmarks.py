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
