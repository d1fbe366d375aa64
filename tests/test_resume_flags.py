"""What --resume may change: refused flags are named, --epochs extends, --data follows a moved dataset."""
import shutil

import pytest

import train
from tests.helpers.samples import run_args
from tests.helpers.voc import write_tiny_voc
from utils.engine.checkpoint import read_checkpoint
from utils.engine.optim import lr_factor, scaled_lr
from utils.engine.resume import explicit_flags


pytestmark = pytest.mark.usefixtures("scan_cache")


def tiny_run(tmp_path, *extra):
    """A finished 1-epoch run on a 4-image dataset of its own: (dataset, run folder)."""
    data = write_tiny_voc(tmp_path / "VOCtiny", 4)
    assert train.main(run_args(data, tmp_path / "logs", "--epochs", 1, "--eval-period", 0, "--mosaic", 0, *extra)) == 0
    return data, tmp_path / "logs" / "exp"


def resume(run, *extra) -> int:
    return train.main(["--resume", str(run / "last.pth"), "--quiet", "--workers", "0", *map(str, extra)])


def test_flags_are_explicit_when_given_even_at_their_default():
    given = explicit_flags(train.make_parser(), ["--resume", "x.pth", "--mosaic", "0.5", "--no-ema", "--scale", "1", "1"])
    assert given == {"resume": "x.pth", "mosaic": 0.5, "ema": False, "scale": [1.0, 1.0]}
    assert "--epochs (more epochs" in " ".join(train.make_parser().format_help().split())


def test_flags_that_would_change_the_run_are_refused_naming_them(tmp_path, capsys):
    _, run = tiny_run(tmp_path)
    before = (run / "last.pth").read_bytes()
    capsys.readouterr()
    # --mosaic 0.5 is the parser's default, and the run recorded 0: it would change the run
    assert resume(run, "--phi", 2, "--lr", 0.5, "--mosaic", 0.5, "--epochs", 2) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "--phi 2 (recorded 0), --lr 0.5 (recorded 0.01), --mosaic 0.5 (recorded 0.0)" in err
    assert "--epochs" not in err.split("would change it")[1].split(";")[0]
    assert resume(run, "--epochs", 0) == 1 and "--epochs can only extend a run" in capsys.readouterr().err
    # the recorded values again, and runtime flags, are fine
    assert resume(run, "--phi", 0, "--mosaic", 0, "--device", "cpu", "--amp", "off") == 0
    assert read_checkpoint(run / "last.pth")["epoch"] == 0 and (run / "last.pth").read_bytes() == before


@pytest.mark.slow
def test_more_epochs_extend_the_run_at_the_final_lr_of_its_schedule(tmp_path, capsys):
    _, run = tiny_run(tmp_path)
    assert resume(run, "--epochs", 2) == 0
    ckpt = read_checkpoint(run / "last.pth")
    assert ckpt["epoch"] == 1 and [r["epoch"] for r in ckpt["results"]] == [1, 2]
    assert ckpt["args"]["epochs"] == 2 and ckpt["scheduler"]["schedule_epochs"] == 1
    args = ckpt["args"]
    final = scaled_lr(args["lr"], args["batch_size"]) * lr_factor(1, 1, args["warmup_epochs"],
                                                                  args["min_lr"] / args["lr"], "cos")
    assert ckpt["results"][1]["lr"] == pytest.approx(final, rel=1e-9)  # epochs after the schedule: its final lr
    assert "2 epochs (extended: the schedule of 1, then its final lr)" in capsys.readouterr().out
    assert resume(run) == 0 and read_checkpoint(run / "last.pth")["epoch"] == 1  # done: nothing more to train


@pytest.mark.slow
def test_a_moved_dataset_resumes_from_its_new_place_and_another_one_is_refused(tmp_path, capsys):
    data, run = tiny_run(tmp_path)
    moved = data.rename(tmp_path / "elsewhere")  # classes.txt moves with it
    assert resume(run, "--epochs", 2) == 1
    assert "does not exist" in capsys.readouterr().err
    other = write_tiny_voc(tmp_path / "VOCother", 4, seed=1)  # same names and classes, other boxes
    assert resume(run, "--epochs", 2, "--data", other) == 1
    err = capsys.readouterr().err
    assert f"--data {other} does not hold the dataset of the run" in err and len(err.strip().splitlines()) == 1
    fewer = shutil.copytree(moved, tmp_path / "VOCfewer")
    (fewer / "ImageSets/Main/train.txt").write_text("img00\nimg01\nimg02\n")
    assert resume(run, "--epochs", 2, "--data", fewer) == 1
    assert "(train 3, val 4 images) differs from the one" in capsys.readouterr().err
    assert resume(run, "--epochs", 2, "--data", moved) == 0
    ckpt = read_checkpoint(run / "last.pth")
    assert ckpt["epoch"] == 1 and ckpt["args"]["data"] == str(moved)
    assert ckpt["args"]["classes"] == str(moved / "classes.txt")
