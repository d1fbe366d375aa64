"""migrate(): a run's record (run_args.yaml, ckpt['args']) of every earlier format reads, repeats and resumes."""
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import train
from tests.helpers.voc import write_tiny_voc
from utils.core.migrate import ADDED, SETTINGS_VERSION, migrate, record_version
from utils.core.settings import SETTINGS, tool_settings
from utils.engine.checkpoint import read_checkpoint, save_atomic

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "run_args"
VERSIONS = range(SETTINGS_VERSION + 1)
TRAIN_NAMES = [s.name for s in tool_settings("train")]


def fixture(version: int) -> dict:
    return yaml.safe_load((FIXTURES / f"v{version}.yaml").read_text())


@pytest.mark.parametrize("version", VERSIONS)
def test_every_format_is_known_by_its_keys_and_migrates_to_todays_settings(version):
    record = fixture(version)
    assert record_version(record, "x") == version
    settings = migrate(record, f"v{version}.yaml")
    assert list(settings) == TRAIN_NAMES
    added_later = {k for v in range(version + 1, SETTINGS_VERSION + 1) for k in ADDED[v]}
    for key, value in record.items():
        if key in settings and key != "channels_last":
            assert settings[key] == value, key  # what the run recorded is kept
    # what it lacks, it ran without: IoU class targets came with version 4 (off before), 'auto' meant on
    assert settings["iou_cls"] is (version >= 4) and settings["channels_last"] == "on"
    for key in added_later - {"iou_cls"}:  # the rest takes today's default
        default = SETTINGS[key].default_for("train")
        assert settings[key] == (list(default) if isinstance(default, tuple) else default), key


@pytest.mark.parametrize("version", VERSIONS)
def test_every_format_repeats_as_a_config_file(version, tmp_path):
    path = tmp_path / "run_args.yaml"
    shutil.copy(FIXTURES / f"v{version}.yaml", path)
    args = train.parse_args(["--config", str(path), "--seed", "3"])
    assert (args.epochs, args.input_size, args.seed, args.channels_last) == (2, 128, 3, "on")
    assert args.iou_cls is (version >= 4)


def test_a_record_with_an_unknown_key_or_a_newer_version_is_refused():
    with pytest.raises(ValueError, match=r"r.yaml: unknown setting 'box_wieght' \(did you mean box_weight\?\)"):
        migrate({**fixture(7), "box_wieght": 0.1}, "r.yaml")
    newer = SETTINGS_VERSION + 1
    with pytest.raises(ValueError, match=f"settings_version {newer} is not one this code reads"):
        migrate({**fixture(7), "settings_version": newer}, "r.yaml")


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    """last.pth of a tiny run stopped after epoch 1 of 2 (epoch_1.pth), and the settings it used."""
    root = tmp_path_factory.mktemp("migrate")
    data = write_tiny_voc(root / "VOCtiny", 2)
    args = ["--data", str(data), "--classes", str(data / "classes.txt"), "--input-size", "128", "--batch-size", "2",
            "--workers", "0", "--save-dir", str(root / "logs"), "--quiet", "--epochs", "2", "--eval-period", "0",
            "--save-period", "1"]
    assert train.main(args) == 0
    return read_checkpoint(root / "logs" / "exp" / "epoch_1.pth")


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_a_checkpoint_of_every_format_resumes(version, one_epoch_run, tmp_path, scan_cache):
    own = one_epoch_run["args"]
    record = {**fixture(version), **{k: own[k] for k in ("data", "classes", "train_split", "val_split", "anchors",
                                                         "save_dir")}}
    ckpt = {**one_epoch_run, "args": record}
    ckpt.pop("data_fingerprint", None)  # older checkpoints did not record it
    (tmp_path / "exp").mkdir()
    save_atomic(ckpt, tmp_path / "exp" / "last.pth")
    assert train.main(["--resume", str(tmp_path / "exp" / "last.pth"), "--quiet", "--workers", "0"]) == 0
    resumed = read_checkpoint(tmp_path / "exp" / "last.pth")
    assert resumed["epoch"] == 1 and len(resumed["results"]) == 2  # epochs count from 0: the second is done
    assert resumed["args"]["settings_version"] == SETTINGS_VERSION and resumed["args"]["iou_cls"] is (version >= 4)
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in resumed["results"])
