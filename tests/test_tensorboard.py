"""train.py / ablate.py --logger tensorboard: the events equal results.csv row for row (read back with TensorBoard's
own reader), hold the run's pictures, continue without duplicates on --resume, overlay an ablation's runs, and a
missing package stops the run with one line."""
import csv
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ablate
import train
from tests.helpers import samples
from utils.eval import ablation_runs

pytestmark = pytest.mark.usefixtures("scan_cache")
EVERYTHING = {"scalars": 0, "images": 0, "tensors": 0}  # keep every event (the default samples some)


def tiny_run(data: Path, save_dir: Path, *extra) -> list:
    return samples.run_args(data, save_dir, "--amp", "off", "--mosaic", "0", *extra)


def read_events(folder: Path):
    """TensorBoard's own reader of the event files in `folder` (the package is imported here: the test of a
    missing package runs without it)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder), size_guidance=EVERYTHING)
    events.Reload()
    return events


def read_results(folder: Path) -> list:
    with open(folder / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_events_equal_results(folder: Path) -> list:
    """Every number of results.csv is the scalar of its column at step epoch (float32), and nothing else is;
    returns the rows."""
    rows, events = read_results(folder), read_events(folder)
    expected = {}
    for row in rows:
        for column, cell in row.items():
            if column not in ("epoch", "best") and cell != "":
                expected.setdefault(column, []).append((int(row["epoch"]), np.float32(float(cell))))
    assert set(events.Tags()["scalars"]) == set(expected)
    for column, points in expected.items():
        logged = [(e.step, np.float32(e.value)) for e in events.Scalars(column)]
        assert logged == points, column  # one point per epoch: no step twice
    return rows


@pytest.mark.slow
def test_events_equal_results_csv_hold_the_pictures_and_a_resume_appends_without_duplicates(tiny_voc, tmp_path):
    assert train.main(tiny_run(tiny_voc, tmp_path, "--epochs", 2, "--eval-period", 1, "--save-period", 1,
                               "--logger", "tensorboard")) == 0
    run = tmp_path / "exp"
    rows = assert_events_equal_results(run)
    assert len(rows) == 2 and {"lr", "train_loss", "box", "obj", "cls", "val_loss", "map50", "map50_95",
                                "seconds"} <= set(rows[0])
    events = read_events(run)
    images = {tag: [(e.step, e.width, e.height) for e in events.Images(tag)] for tag in events.Tags()["images"]}
    for name in ("labels.png", "train_batch0.jpg"):
        with Image.open(run / name) as picture:
            assert images.pop(Path(name).stem) == [(1, *picture.size)], name
    assert [step for step, _, _ in images.pop("f1_curve")] == [1, 2]  # each evaluation's, as get_map.py draws it
    assert sorted(images) == ["pr_curve/00_red", "pr_curve/01_blue"]

    # killed after logging epoch 2 but before writing its last.pth: the resumed run's epoch 2 replaces it
    killed = tmp_path / "killed"
    killed.mkdir()
    for events_file in run.glob("events.out.tfevents.*"):
        shutil.copy(events_file, killed / events_file.name)
    shutil.copy(run / "epoch_1.pth", killed / "last.pth")
    from torch.utils.tensorboard import SummaryWriter
    with SummaryWriter(str(killed)) as orphan:
        orphan.add_scalar("train_loss", 999.0, 2)
    time.sleep(1.1)  # event files are read in name order, which starts with the second they were opened
    assert train.main(["--resume", str(killed / "last.pth"), "--quiet", "--workers", "0"]) == 0
    resumed = assert_events_equal_results(killed)
    assert [r["epoch"] for r in resumed] == ["1", "2"]

    # a run recorded without the logger, resumed with it: the checkpoint's rows come first, then the new epoch
    later = tmp_path / "later"
    later.mkdir()
    ckpt = torch.load(run / "epoch_1.pth", weights_only=True)
    ckpt["args"]["logger"] = "none"
    torch.save(ckpt, later / "last.pth")
    assert train.main(["--resume", str(later / "last.pth"), "--quiet", "--workers", "0", "--logger",
                       "tensorboard"]) == 0
    assert len(assert_events_equal_results(later)) == 2
    assert "labels" in read_events(later).Tags()["images"]


def test_epochs_trained_without_the_logger_are_logged_when_it_comes_back(tiny_voc, tmp_path):
    base = tiny_run(tiny_voc, tmp_path, "--epochs", 1, "--logger", "tensorboard")
    assert train.main(base) == 0
    last = str(tmp_path / "exp" / "last.pth")
    resume = ["--resume", last, "--quiet", "--workers", "0"]
    assert train.main(resume + ["--epochs", "2", "--logger", "none"]) == 0
    assert train.main(resume + ["--epochs", "3", "--logger", "tensorboard"]) == 0
    rows = assert_events_equal_results(tmp_path / "exp")  # epoch 2, trained without events, is there too
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]


def block_tensorboard(monkeypatch) -> None:
    """Both imports fail as they do where the package is not installed."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)


def test_without_the_package_train_and_ablate_stop_with_one_line_before_training(tiny_voc, tmp_path, monkeypatch,
                                                                                 capsys):
    block_tensorboard(monkeypatch)
    assert train.main(tiny_run(tiny_voc, tmp_path, "--epochs", 1, "--logger", "tensorboard")) == 1
    said = capsys.readouterr()
    err = said.err.strip()
    assert len(err.splitlines()) == 1 and "pip install tensorboard" in err and "--logger tensorboard" in err, err
    assert "scan" not in said.out, "said after the dataset scan instead of before it"
    assert not list(tmp_path.glob("exp/*")), "the run wrote files before it stopped"
    out = tmp_path / "ablation"
    assert ablate.main(["--variants", "0", "--out", out, "--data", tiny_voc, "--epochs", "1",
                        "--logger", "tensorboard"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install tensorboard" in err, err
    assert not (out / "runs").exists()


@pytest.mark.slow
def test_an_ablation_puts_every_run_under_one_logdir(tiny_voc, tmp_path, monkeypatch):
    monkeypatch.setattr(ablation_runs, "run_logged", lambda cmd, log, echo: train.main(cmd[2:]))  # in-process
    out = tmp_path / "ablation"
    assert ablate.main(["--variants", "0,3", "--out", out, "--data", tiny_voc, "--classes",
                        tiny_voc / "classes.txt", "--epochs", "1", "--input-size", "64", "--batch-size", "2",
                        "--eval-period", "0", "--workers", "0", "--device", "cpu", "--bench-size", "64",
                        "--latency-runs", "1", "--latency-warmup", "0", "--bootstrap", "0", "--quiet",
                        "--logger", "tensorboard", "--train-args=--mosaic 0 --amp off"]) == 0
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    logdir = EventMultiplexer(size_guidance=EVERYTHING).AddRunsFromDirectory(str(out / "runs"))
    logdir.Reload()
    assert sorted(logdir.Runs()) == ["phi0_s0", "phi3_s0"]  # `tensorboard --logdir OUT/runs` overlays them
    for name in ("phi0_s0", "phi3_s0"):
        assert [e.step for e in logdir.Scalars(name, "train_loss")] == [1]
        assert_events_equal_results(out / "runs" / name)


def test_ci_and_the_readme_install_the_optional_packages_after_the_required_ones():
    from tests.conftest import ROOT
    extra = [line.strip() for line in (ROOT / "requirements-extra.txt").read_text().splitlines()]
    assert "tensorboard" in extra and "tensorboard" not in (ROOT / "requirements.txt").read_text().split()
    installs = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pip install" in line]
    assert [line.split("-r ")[1].split()[0] for line in installs] == ["requirements.txt", "requirements-extra.txt"]
    setup = (ROOT / "README.md").read_text().split("\n## Set-up")[1].split("\n## ")[0]
    assert "`pip install -r requirements-extra.txt`" in setup and "then `python -m pytest`" in setup
