"""End-to-end runs of train.py on a tiny generated VOC dataset."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import train
from tests.tiny_voc import CLASSES, write_tiny_voc
from utils.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    return write_tiny_voc(tmp_path_factory.mktemp("voc") / "VOCtiny", 4)


@pytest.fixture(autouse=True)
def scan_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_SCAN_CACHE", str(tmp_path / "scan_cache"))


def base_args(data: Path, save_dir: Path, *extra) -> list:
    return ["--data", str(data), "--classes", str(data / "classes.txt"), "--input-size", "128",
            "--batch-size", "2", "--workers", "0", "--save-dir", str(save_dir), "--quiet", *map(str, extra)]


def epoch_losses(run_dir: Path) -> list:
    return [row["train_loss"] for row in read_checkpoint(run_dir / "last.pth")["results"]]


def test_overfits_a_few_images(tiny_voc, tmp_path, capsys):
    args = base_args(tiny_voc, tmp_path, "--epochs", 40, "--eval-period", 40, "--batch-size", 4, "--mosaic", 0,
                     "--jitter", 0, "--scale", 1, 1, "--flip", 0, "--hsv", 0, 0, 0, "--warmup-epochs", 2,
                     "--lr", 0.1, "--no-ema")
    assert train.main(args) == 0
    out = capsys.readouterr().out
    losses = epoch_losses(tmp_path / "exp")
    assert losses[-1] < losses[0] / 5, losses
    final_map = float(re.search(r"last evaluation .*?mAP@0\.5 ([0-9.]+)", out).group(1))
    assert final_map > 0.9, out


def test_printed_map_equals_get_map_on_the_checkpoint(tiny_voc, tmp_path, capsys):
    assert train.main(base_args(tiny_voc, tmp_path, "--epochs", 2, "--eval-period", 1)) == 0
    printed = float(re.search(r"last evaluation .*?mAP@0\.5 ([0-9.]+)", capsys.readouterr().out).group(1))
    import get_map
    assert get_map.cli(["--weights", str(tmp_path / "exp" / "last.pth"), "--data", str(tiny_voc), "--split", "val",
                         "--out", str(tmp_path / "map"), "--no-plots"]) == 0
    out = capsys.readouterr().out
    reported = float(re.search(r"mAP@0\.5 VOC all-point: ([0-9.]+)", out).group(1))
    assert reported == pytest.approx(printed, abs=5e-5), out


def test_resume_gives_the_same_next_epoch_loss(tiny_voc, tmp_path):
    full = tmp_path / "full"
    assert train.main(base_args(tiny_voc, full, "--epochs", 2, "--eval-period", 0, "--save-period", 1)) == 0
    # a run killed after epoch 1 has last.pth as it was then: epoch_1.pth is that file
    killed = tmp_path / "killed" / "exp"
    killed.mkdir(parents=True)
    shutil.copy(full / "exp" / "epoch_1.pth", killed / "last.pth")
    assert train.main(["--resume", str(killed / "last.pth"), "--quiet", "--workers", "0"]) == 0
    assert epoch_losses(killed) == pytest.approx(epoch_losses(full / "exp"), rel=1e-6)
    assert read_checkpoint(killed / "last.pth")["epoch"] == 1


def test_same_seed_same_losses(tiny_voc, tmp_path):
    for name in ("a", "b"):
        assert train.main(base_args(tiny_voc, tmp_path / name, "--epochs", 1, "--eval-period", 0)) == 0
    assert epoch_losses(tmp_path / "a" / "exp") == epoch_losses(tmp_path / "b" / "exp")


def test_partial_load_reports_what_it_skipped(tiny_voc, tmp_path, capsys):
    from nets.yolo import YoloBody
    from utils.checkpoint import save_atomic
    other = YoloBody([[3, 4, 5], [1, 2, 3]], 7, phi=1)  # other class count, other attention
    save_atomic(other.state_dict(), tmp_path / "other.pth")
    assert train.main(base_args(tiny_voc, tmp_path, "--epochs", 1, "--eval-period", 0, "--phi", 0,
                                "--weights", tmp_path / "other.pth")) == 0
    out = capsys.readouterr().out
    loaded = int(re.search(r"loaded (\d+) tensors", out).group(1))
    assert loaded > 100
    assert "yolo_headP5.1.weight (shape" in out and "feat1_att.fc.0.weight (not in this model)" in out


def test_checkpoint_is_enough_for_prediction(tiny_voc, tmp_path):
    assert train.main(base_args(tiny_voc, tmp_path, "--epochs", 1, "--eval-period", 0, "--phi", 3)) == 0
    ckpt = read_checkpoint(tmp_path / "exp" / "last.pth")
    assert ckpt["class_names"] == CLASSES and ckpt["attention"] == "eca" and ckpt["input_size"] == [128, 128]
    for key in ("optimizer", "scheduler", "epoch", "args", "anchors", "anchors_mask", "scale_x_y", "ema"):
        assert ckpt.get(key) is not None, key
    assert (tmp_path / "exp" / "best.pth").exists()  # by validation loss when evaluation is off
    assert (tmp_path / "exp" / "results.csv").read_text().count("\n") == 2
    assert (tmp_path / "exp" / "loss.png").exists() and (tmp_path / "exp" / "run_args.yaml").exists()


def test_config_file_repeats_a_run_and_flags_override(tiny_voc, tmp_path):
    (tmp_path / "run.yaml").write_text("epochs: 3\nbatch_size: 4\nphi: 2\n")
    args = train.parse_args(["--config", str(tmp_path / "run.yaml"), "--batch-size", "2"])
    assert (args.epochs, args.batch_size, args.phi) == (3, 2, 2)
    (tmp_path / "bad.yaml").write_text("epochz: 3\n")
    with pytest.raises(SystemExit):
        train.parse_args(["--config", str(tmp_path / "bad.yaml")])


def test_bad_input_size_fails_clearly(tiny_voc, tmp_path, capsys):
    assert train.main(base_args(tiny_voc, tmp_path, "--input-size", 100, "--epochs", 1)) == 2
    assert "multiple of 32" in capsys.readouterr().err


def test_torchrun_two_processes_gloo(tiny_voc, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           str(ROOT / "train.py"), *base_args(tiny_voc, tmp_path, "--epochs", 1, "--eval-period", 0)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "exp").glob("*.pth")) == ["best.pth", "last.pth"]
    assert not (tmp_path / "exp2").exists()  # only rank 0 made a run folder
