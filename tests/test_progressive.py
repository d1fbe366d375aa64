"""--progressive-size: the training input grows from a small size to --input-size over the first epochs."""
import re

import pytest
import torch

import train
from tests.helpers.samples import make_colour_samples
from tests.helpers.runs import base_args, checkpoint_tensors
from utils.data.dataloader import YoloDataset, build_dataloader, epoch_input_size
from nets.yolo import YoloBody
from utils.engine.checkpoint import read_checkpoint

pytestmark = pytest.mark.usefixtures("scan_cache")


def test_the_longer_side_grows_in_steps_of_32_and_reaches_the_full_size_at_the_ratio():
    sides = [epoch_input_size(e, 16, (320, 320), 224, 0.5)[0] for e in range(16)]
    assert sides == [224, 224, 224, 256, 256, 256, 288, 288] + [320] * 8
    assert [epoch_input_size(e, 16, (320, 320))[0] for e in (0, 15)] == [320, 320]  # off
    assert epoch_input_size(0, 10, (320, 480), 224, 0.5) == (128, 224)  # scaled alike, each rounded down to 32
    assert epoch_input_size(5, 10, (320, 480), 224, 0.5) == (320, 480)
    assert epoch_input_size(0, 3, (64, 64), 32, 0.3) == (64, 64)  # no epoch before 30% of 3: off


def test_a_smaller_epoch_size_reaches_the_workers_and_gives_the_batches_of_a_dataset_of_that_size(tmp_path):
    samples = make_colour_samples(tmp_path / "imgs", sizes=[(60, 40), (48, 64), (80, 50), (40, 40)] * 2)
    grown = YoloDataset(samples, 128, train=True, seed=3)
    loader = build_dataloader(grown, 4, workers=2, seed=3)
    loader.set_epoch(1)
    assert next(iter(loader))[0].shape[-2:] == (128, 128)
    grown.set_input_size((64, 64))  # the persistent workers see it with every index
    small = build_dataloader(YoloDataset(samples, 64, train=True, seed=3), 4, workers=0, seed=3)
    small.set_epoch(1)
    for (a, ta), (b, tb) in zip(loader, small, strict=True):
        assert a.shape[-2:] == (64, 64) and torch.equal(a, b) and torch.equal(ta, tb)
    val = YoloDataset(samples, 128, train=False)
    val.set_input_size((64, 64))
    assert val[0][0].shape[:2] == (128, 128)  # validation stays at the input size


@pytest.mark.slow
def test_a_progressive_run_grows_its_input_and_resumes_exactly(tiny_voc, tmp_path, capsys, monkeypatch):
    seen = set()  # the input side of every training forward pass
    forward = YoloBody.forward

    def recording_forward(model, x, *args, **kwargs):
        if model.training:
            seen.add(x.shape[-1])
        return forward(model, x, *args, **kwargs)

    monkeypatch.setattr(YoloBody, "forward", recording_forward)
    flags = ("--epochs", 3, "--eval-period", 0, "--save-period", 1, "--progressive-size", 64,
             "--progressive-ratio", 0.67)
    assert train.main(base_args(tiny_voc, tmp_path / "full", *flags)) == 0
    said = re.findall(r"epoch (\d): training input (\d+)x(\d+)", capsys.readouterr().out)
    assert said == [("1", "64", "64"), ("2", "96", "96"), ("3", "128", "128")]
    assert seen == {64, 96, 128}
    killed = tmp_path / "killed" / "exp"
    killed.mkdir(parents=True)
    (killed / "last.pth").write_bytes((tmp_path / "full" / "exp" / "epoch_1.pth").read_bytes())
    capsys.readouterr()
    assert train.main(["--resume", str(killed / "last.pth"), "--quiet", "--workers", "0"]) == 0
    assert "epoch 2: training input 96x96" in capsys.readouterr().out
    resumed, straight = read_checkpoint(killed / "last.pth"), read_checkpoint(tmp_path / "full" / "exp" / "last.pth")
    a, b = checkpoint_tensors(resumed), checkpoint_tensors(straight)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-7, msg=key)


@pytest.mark.parametrize("flags, message", [
    (("--progressive-size", 100), "multiple of 32 below --input-size's longer side \\(128\\), got 100"),
    (("--progressive-size", 128), "got 128"),
    (("--progressive-size", 64, "--progressive-ratio", 0), "--progressive-ratio must be in \\(0, 1\\], got 0"),
    (("--progressive-size", 64, "--progressive-ratio", 0.5), "--progressive-ratio 0.5 of 1 epochs leaves no epoch"),
    (("--progressive-size", 64, "--epochs", 2, "--attention", "cbam_joint"), "holds cbam_joint, whose weights fix"),
])
def test_a_bad_progressive_setting_is_refused_in_one_line(tiny_voc, tmp_path, capsys, flags, message):
    assert train.main(base_args(tiny_voc, tmp_path, "--epochs", 1, *flags)) == 1
    assert re.search(message, capsys.readouterr().err)
