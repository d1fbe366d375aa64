"""YOLO.train: the run `python train.py` makes with the same settings (same losses and weights for a seed), its
folder and final metrics returned; the keywords are train.py's flags by name, an unknown one names the nearest."""
import pytest
import torch

import train
from utils.engine.checkpoint import read_checkpoint
from yolo import YOLO


pytestmark = pytest.mark.usefixtures("scan_cache")

SETTINGS = {"input_size": 64, "batch_size": 2, "workers": 0, "quiet": True, "epochs": 2, "eval_period": 1, "seed": 3,
            "phi": 2, "mosaic": 1.0, "lr": 0.02}
FLAGS = ["--input-size", "64", "--batch-size", "2", "--workers", "0", "--quiet", "--epochs", "2", "--eval-period", "1",
         "--seed", "3", "--phi", "2", "--mosaic", "1.0", "--lr", "0.02"]
TIMING = ("seconds",)


@pytest.mark.slow
def test_yolo_train_makes_the_run_train_py_makes_with_the_same_settings_and_seed(tiny_voc, tmp_path):
    classes = str(tiny_voc / "classes.txt")
    assert train.main(["--data", str(tiny_voc), "--classes", classes, "--save-dir", str(tmp_path / "script"),
                       *FLAGS]) == 0
    run = YOLO.train(data=str(tiny_voc), classes=classes, save_dir=str(tmp_path / "api"), **SETTINGS)
    assert run.run_dir.resolve() == (tmp_path / "api" / "exp").resolve()
    script, api = (read_checkpoint(folder / "last.pth") for folder in (tmp_path / "script" / "exp", run.run_dir))
    strip = [{k: v for k, v in row.items() if k not in TIMING} for row in script["results"]]
    assert len(strip) == 2 and strip == [{k: v for k, v in row.items() if k not in TIMING} for row in api["results"]]
    assert all(torch.equal(script["model"][k], api["model"][k]) for k in script["model"])
    assert {k: v for k, v in script["args"].items() if k != "save_dir"} == {
        k: v for k, v in api["args"].items() if k != "save_dir"}
    assert run.history == api["results"] and run.metrics == run.history[-1]
    assert run.metrics["epoch"] == 2 and 0 <= run.metrics["map50"] <= 1 and run.metrics["train_loss"] > 0


def test_yolo_train_refuses_an_unknown_or_mistyped_setting_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"unknown setting 'epoch' \(did you mean epochs\?\)"):
        YOLO.train(data=str(tmp_path), epoch=3)
    with pytest.raises(ValueError, match="lr"):
        YOLO.train(data=str(tmp_path), lr="fast")
    assert not (tmp_path / "logs").exists()


@pytest.mark.slow
def test_yolo_train_resumes_a_run_with_its_recorded_data_and_extends_it(tiny_voc, tmp_path):
    first = YOLO.train(data=str(tiny_voc), classes=str(tiny_voc / "classes.txt"), save_dir=str(tmp_path),
                       **{**SETTINGS, "epochs": 1, "eval_period": 0})
    resumed = YOLO.train(resume=str(first.run_dir / "last.pth"), epochs=2, workers=0, quiet=True)
    assert resumed.run_dir == first.run_dir.resolve() and [r["epoch"] for r in resumed.history] == [1, 2]
    assert read_checkpoint(first.run_dir / "last.pth")["args"]["data"] == str(tiny_voc.resolve())
