"""The command line: the happy paths users script against, and one-line errors with non-zero exits."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from aeclass.cli import main
from aeclass.errors import AeclassError


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--labels", "50", "--epochs", "2", "--out", str(out), "--no-report", "--quiet"]) == 0
    return out


def test_train_prints_accuracy_and_writes_the_run(trained):
    m = json.loads((trained / "metrics.json").read_text())
    for key in ("test_accuracy", "test_recon_mse", "train_seconds"):
        assert m[key] is not None
    assert 0 <= m["test_accuracy"] <= 1


def test_config_file_and_flags_override_it(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("strategy: supervised\nmodel: cnn\nepochs: 5\nlabels: 30\n")
    code, out, _ = run(capsys, "train", "--config", str(cfg), "--epochs", "1", "--out", str(tmp_path / "r"), "--no-report")
    assert code == 0 and "test accuracy:" in out
    import yaml
    resolved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert resolved["strategy"] == "supervised" and resolved["epochs"] == 1 and resolved["labels"] == 30


def test_resume_flag_continues_a_run_and_refuses_new_options(tmp_path, capsys, interrupt_training):
    out = tmp_path / "r"
    interrupt_training.arm(1)
    assert main(["train", "--labels", "50", "--epochs", "2", "--out", str(out), "--no-report", "--quiet"]) == 130
    interrupt_training.disarm()
    saved = (out / "config.yaml").read_text()
    code, _, err = run(capsys, "train", "--resume", str(out), "--epochs", "3", "--no-report", "--quiet")
    assert code == 2 and "--epochs 3 differs from the run's 2" in err and (out / "config.yaml").read_text() == saved
    code, _, _ = run(capsys, "train", "--resume", str(out), "--threads", "1", "--no-report", "--quiet")
    assert code == 0
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 1 + 2


def test_evaluate_matches_training_metrics(trained, capsys):
    code, out, _ = run(capsys, "evaluate", str(trained), "--json")
    m = json.loads(out)
    assert code == 0
    assert m["test_accuracy"] == pytest.approx(json.loads((trained / "metrics.json").read_text())["test_accuracy"])


def test_predict_files_and_folders_of_any_mode_and_size(trained, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray((np.random.rand(40, 30, 3) * 255).astype("uint8")).save(imgs / "rgb.png")
    Image.fromarray((np.random.rand(8, 8) * 255).astype("uint8")).save(imgs / "grey.jpg")
    Image.fromarray((np.random.rand(16, 16, 4) * 255).astype("uint8"), "RGBA").save(imgs / "alpha.png")
    code, out, _ = run(capsys, "predict", str(trained), str(imgs), "--json", "--top-k", "3")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 3
    for r in rows:
        assert len(r["classes"]) == 3 and r["probabilities"] == sorted(r["probabilities"], reverse=True)
        assert 0 < sum(r["probabilities"]) <= 1.0001


def test_export_writes_safetensors_and_an_exported_program(trained, tmp_path, capsys):
    import torch

    from aeclass.inference import load_exported, load_model
    code, out, _ = run(capsys, "export", str(trained), "--out", str(tmp_path / "m"))
    assert code == 0
    model, _ = load_model(trained)
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        ref = model(x)["logits"]
        assert torch.allclose(load_exported(tmp_path / "m.safetensors")(x)["logits"], ref, atol=1e-6)
        program = torch.export.load(str(tmp_path / "m.pt2")).module()
        assert torch.allclose(program(x)[0], ref, atol=1e-5)


def test_datasets_list_and_verify(capsys):
    code, out, _ = run(capsys, "datasets", "list")
    assert code == 0 and "mnist" in out and "folder:PATH" in out


@pytest.mark.parametrize("argv, message", [
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--model", "nope", "--epochs", "1"], "unknown model 'nope'"),
    (["train", "--strategy", "magic"], "--strategy: expected one of"),
    (["train", "--labels", "-3"], "--labels: expected a positive integer"),
    (["train", "--epochs", "0"], "--epochs: expected a positive integer"),
    (["train", "--data", "nosuch"], "unknown dataset 'nosuch'"),
    (["train", "--data", "folder:/no/such/dir"], "/no/such/dir"),
    (["train", "--config", "/no/such.yaml"], "--config: file not found"),
    (["train", "--augment", "crop=x"], "--augment"),
    (["train", "--resume", "/no/such/run"], "--resume: no run to continue"),
    (["evaluate", "/no/such/run"], "/no/such/run"),
    (["predict", "/no/such/run", "x.png"], "/no/such/run"),
    (["datasets", "verify"], "name a dataset"),
])
def test_user_errors_are_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aeclass: error:") and message in lines[0], err
    assert "Traceback" not in err


def test_bad_yaml_and_unknown_config_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    assert run(capsys, "train", "--config", str(bad))[0] == 2
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("epochz: 3\n")
    code, _, err = run(capsys, "train", "--config", str(unknown))
    assert code == 2 and "unknown option 'epochz'; did you mean 'epochs'?" in err


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.pt").write_bytes(b"\x80\x02garbage")
    code, _, err = run(capsys, "evaluate", str(tmp_path))
    assert code == 2 and "not a readable aeclass checkpoint" in err


def test_bad_image_for_predict(trained, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    code, _, err = run(capsys, "predict", str(trained), str(tmp_path / "bad.png"))
    assert code == 2 and "bad.png" in err and len(err.strip().splitlines()) == 1


def test_console_script_runs_as_a_module():
    p = subprocess.run([sys.executable, "-m", "aeclass", "train", "--model", "nope"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().startswith("aeclass: error:") and "Traceback" not in p.stderr


@pytest.mark.slow
def test_no_options_runs_the_demo_preset_even_with_where_to_write(tmp_path, capsys):
    import yaml
    code, out, _ = run(capsys, "train", "--out", str(tmp_path / "demo"), "--no-report", "--quiet")
    assert code == 0 and "--preset demo" in out and "test accuracy:" in out
    cfg = yaml.safe_load((tmp_path / "demo" / "config.yaml").read_text())
    assert (cfg["data"], cfg["labels"], cfg["strategy"], cfg["noise"]) == ("digits", 100, "joint", 0.2)


@pytest.mark.slow
def test_a_terminal_run_shows_no_warning_text(tmp_path):
    """On a terminal (a pty: tqdm's bars are on) with every warning an error, training runs clean: no warning
    breaks the progress bar, none is hidden."""
    import os
    import pty
    import subprocess
    import sys
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-W", "error", "-m", "aeclass", "train", "--data", "digits", "--labels",
                             "50", "--epochs", "2", "--threads", "1", "--no-report", "--out", str(tmp_path / "run")],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "test accuracy" in text and "Warning" not in text and "warn" not in text.lower(), text[-2000:]


def test_help_groups_booleans_print_config_and_friendlier_errors(tmp_path, capsys, monkeypatch):
    import yaml
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert all(f"{g} options:" in text for g in ("data", "model", "strategy", "optimisation", "speed", "run"))
    assert "(default: 64)" in text and "semi, ladder: top-class probability" in text  # defaults; options two strategies share name both
    # booleans: --x, --no-x and the old --x true|false all work
    for flags, want in ((["--nesterov"], True), (["--no-nesterov"], False), (["--nesterov", "true"], True),
                        (["--nesterov", "false"], False)):
        assert main(["train", "--optimizer", "sgd", *flags, "--print-config"]) == 0
        assert yaml.safe_load(capsys.readouterr().out)["nesterov"] is want
    assert not (tmp_path / "runs").exists()  # --print-config trains nothing
    code, _, err = run(capsys, "train", "--bogus")
    assert code == 2 and err.startswith("aeclass: error: unrecognized arguments: --bogus") and err.count("aeclass:") == 1
    (tmp_path / "pics").mkdir()
    code, _, err = run(capsys, "train", "--data", str(tmp_path / "pics"), "--out", str(tmp_path / "r"))
    assert code == 2 and f"did you mean --data folder:{tmp_path / 'pics'}" in err
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("AECLASS_DATA", raising=False)
    assert main(["datasets", "locate", "mnist", "--data-dir", str(tmp_path / "none")]) == 1  # nothing found


def test_labels_all_and_flat_strategy_options_in_the_python_api(tmp_path):
    from aeclass import TrainConfig, train
    from aeclass.config import validate
    cfg = validate(TrainConfig(data="digits", labels="all", strategy="semi", confidence=0.9))
    assert cfg.labels is None and cfg.strategy_kwargs["confidence"] == 0.9 and cfg.confidence == 0.9
    with pytest.raises(AeclassError, match="--confidence"):
        train(TrainConfig(data="digits", strategy="semi", confidence=2.0, out=str(tmp_path / "r")))
    assert not (tmp_path / "r").exists()  # train(cfg) validates first: nothing is written
