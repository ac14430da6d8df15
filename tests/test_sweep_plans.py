"""`aeclass sweep` defaults by kind of data (aeclass/sweep_plans.py) and the summary's recommendation."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aeclass.data import channels_of
from aeclass.sweep import run_sweep, summary_markdown
from aeclass.sweep_plans import DEFAULT, PHOTOS, plan_for

QUIET = dict(log=lambda *a: None, report=False)


pytestmark = pytest.mark.usefixtures("keep_threads")


def colour_folder(root: Path, per_class: int = 110) -> Path:
    """Three classes of 16x16 RGB images: stripes, dots, a ring, each in a random colour on a random ground."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("bars", "dots", "ring")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            mask = np.zeros((16, 16), bool)
            if c == 0:
                mask[:, ::4] = True
            elif c == 1:
                mask[::4, ::4] = True
            else:
                mask[2:14, 2] = mask[2:14, 13] = mask[2, 2:14] = mask[13, 2:14] = True
            ink, ground = rng.integers(150, 256, 3), rng.integers(0, 90, 3)
            img = np.where(mask[..., None], ink, ground).astype(np.uint8)
            Image.fromarray(img, "RGB").save(root / name / f"{i}.png")
    return root


def rows_of(d: Path) -> list[dict]:
    with open(d / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_plans_by_kind_of_data():
    assert plan_for(1) is DEFAULT and plan_for(3) is PHOTOS and plan_for(None) is DEFAULT
    assert DEFAULT.base("semi") == {"epochs": 10, "noise": 0.2}  # what sweeps of grey images always had
    semi, sup = PHOTOS.base("semi"), PHOTOS.base("supervised")
    assert semi["strong_augment"] == "randaugment" and semi["epochs"] == 4 and "data" not in semi
    assert sup["model"] == "fastcnn" and "labels" not in sup
    assert semi["noise"] == 0.0 and semi["recon_weight"] == 1.0  # the recipe's masked reconstruction, no noise
    # Under a user's preset: as sweeps always did, the test set scored once per run.
    assert PHOTOS.base("semi", own_recipe=False) == {**DEFAULT.options, "test_every": 0}
    assert "test_every" not in DEFAULT.options  # grey images keep their per-epoch test curves


def test_a_photo_folder_gets_the_photo_plan(tmp_path, monkeypatch):
    monkeypatch.setenv("AECLASS_NO_CACHE", "1")
    data = colour_folder(tmp_path / "photos")
    assert channels_of(f"folder:{data}") == 3 and channels_of(f"folder:{data}", channels=1) == 1
    assert channels_of("mnist") == 1 and channels_of("cifar10") == 3 and channels_of("nonsense") is None
    out = tmp_path / "sweep"
    run_sweep(out, data=f"folder:{data}", epochs=1, overrides={"threads": 1}, **QUIET)
    settings = json.loads((out / "sweep.json").read_text())
    assert settings["plan"] == "photos" and settings["strategies"] == ["supervised", "semi"]
    assert settings["seeds"] == [0] and settings["skip"] == [["semi", "all"]]
    assert settings["resolved"]["semi"]["strong_augment"] == "randaugment"
    assert settings["resolved"]["semi"]["epochs"] == 1  # the user's --epochs wins over the plan's 4
    assert settings["resolved"]["supervised"]["model"] == "fastcnn"
    cells = {(r["strategy"], r["labels"]) for r in rows_of(out)}
    # 250 runs (264 training images); 4000 >= them (the same as 'all'): skipped; semi is left out at 'all'
    assert cells == {("supervised", "250"), ("semi", "250"), ("labelspreading-pca", "250"),
                     ("supervised", "all"), ("labelspreading-pca", "all")}
    summary = (out / "summary.md").read_text()
    assert "Which strategy to use, by test accuracy" in summary
    assert "- 250 labels: **" in summary and "one seed" in summary
    # Resumed with the same command: every cell read back, the plan the same.
    again = run_sweep(out, data=f"folder:{data}", epochs=1, overrides={"threads": 1}, **QUIET)
    assert again.trained == 0 and again.reused == 5


def test_a_sweep_started_before_plans_keeps_the_default_plan(tmp_path, monkeypatch):
    monkeypatch.setenv("AECLASS_NO_CACHE", "1")
    data = colour_folder(tmp_path / "photos", per_class=12)
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"data": f"folder:{data}", "strategies": ["supervised"]}))
    run_sweep(out, data=f"folder:{data}", strategies="supervised", labels="all", seeds=1, epochs=1,
              baseline=False, overrides={"threads": 1}, **QUIET)
    settings = json.loads((out / "sweep.json").read_text())
    assert settings["plan"] == "default" and settings["resolved"]["supervised"]["noise"] == 0.2
    assert settings["resolved"]["supervised"]["model"] != "fastcnn"


def test_the_photo_plan_scores_the_test_set_once_unless_told(tmp_path, monkeypatch):
    monkeypatch.setenv("AECLASS_NO_CACHE", "1")
    data = colour_folder(tmp_path / "photos", per_class=12)

    def tested_epochs(out, **overrides):
        run_sweep(out, data=f"folder:{data}", strategies="supervised", labels="all", seeds=1, epochs=2,
                  baseline=False, overrides={"threads": 1, **overrides}, **QUIET)
        with open(out / "runs" / "supervised-all-s0" / "metrics.csv", newline="") as f:
            return [int(r["epoch"]) for r in csv.DictReader(f) if r["test_accuracy"]]
    assert tested_epochs(tmp_path / "once") == [2]  # the plan's test_every 0: after the last epoch only
    assert rows_of(tmp_path / "once")[0]["test_accuracy"]  # which is what the sweep reports
    assert tested_epochs(tmp_path / "curves", test_every=1) == [1, 2]  # --test-every wins over the plan


def _rows(acc: dict) -> list[dict]:
    return [{"strategy": s, "labels": lab, "seed": k, "test_accuracy": a, "train_seconds": 1.0}
            for (s, lab), accs in acc.items() for k, a in enumerate(accs)]


def test_the_recommendation_names_the_best_and_says_when_the_lead_is_noise():
    clear = summary_markdown(_rows({("supervised", "100"): [0.50, 0.51, 0.49], ("semi", "100"): [0.70, 0.71, 0.69],
                                    ("supervised", "all"): [0.90, 0.92, 0.88], ("semi", "all"): [0.91, 0.87, 0.89]}),
                             "digits", 1000)
    assert "- 100 labels: **semi** (70.00 %, 20.00 points above supervised)" in clear
    assert "- all labels: **supervised** (90.00 %, 1.00 points above semi (within twice the seeds" in clear
    one = summary_markdown(_rows({("supervised", "100"): [0.5], ("semi", "100"): [0.7]}), "digits", 1000)
    assert "**semi** (70.00 %, 20.00 points above supervised (one seed: no clear lead" in one
