"""What training promises under faults: a kill, Ctrl-C, non-finite gradients, crafted weights files."""
import math
import os
import stat

import pytest
import torch

import train
from tests.helpers.samples import run_args
from tests.helpers.voc import write_tiny_voc
from utils.engine import loop
from utils.engine.checkpoint import read_checkpoint
from utils.core.fileio import atomic_open
from utils.engine.recipes import RECIPES
from utils.engine.trainer import TrainState, TrainingDiverged, gradient_norm, nonfinite_tensors, train_step, validation_loss
from tests.conftest import ANCHORS_MASK


pytestmark = pytest.mark.usefixtures("scan_cache")


class Killed(BaseException):
    """Stands for SIGKILL: nothing in train.py catches it, so nothing more is written."""


class NaNGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose gradients are not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, math.nan)


def tiny_state(loss_fn, **kw) -> TrainState:
    from utils.engine.ema import ModelEMA
    torch.manual_seed(0)
    model = TupleOut(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    return TrainState(model=model, loss_fn=loss_fn, optimizer=optimizer, device=torch.device("cpu"), amp_dtype=None,
                      base_lr=0.1, epochs=1, warmup_epochs=0, min_lr_ratio=0.01, lr_schedule="cos",
                      ema=ModelEMA(model, tau=1e-9), **kw)


def snapshot(state: TrainState) -> list:
    tensors = [*state.model.state_dict().values(), *state.ema.module.state_dict().values()]
    tensors += [t for s in state.optimizer.state_dict()["state"].values() for t in s.values()]
    return [t.clone() for t in tensors]


def test_a_step_with_non_finite_gradients_leaves_weights_ema_and_optimizer_untouched():
    def finite_loss_nan_grads(outputs, targets):
        loss = NaNGradient.apply(outputs[0]).mean()
        return loss, {"box": loss, "obj": loss * 0, "cls": loss * 0}

    def good_loss(outputs, targets):
        loss = outputs[0].square().mean()
        return loss, {"box": loss, "obj": loss * 0, "cls": loss * 0}

    images = torch.randn(2, 3, 8, 8)
    state = tiny_state(good_loss)
    assert train_step(state, images, None) is not None  # one good step: optimizer state exists
    before = snapshot(state)
    state.loss_fn = finite_loss_nan_grads
    with pytest.warns(UserWarning, match="non-finite gradients"):
        assert train_step(state, images, None) is None
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(state)))
    assert not nonfinite_tensors(state.model.state_dict())
    state.max_bad_steps = 3
    with pytest.warns(UserWarning), pytest.raises(TrainingDiverged, match="3 steps in a row"):
        for _ in range(3):
            train_step(state, images, None)


class TupleOut(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return (self.inner(x),)


def test_gradients_are_clipped_to_the_flag():
    layer = torch.nn.Linear(4, 1)
    (layer(torch.ones(1, 4)) * 1000).sum().backward()
    norm = gradient_norm(layer, clip=2.0)
    assert norm > 100
    assert float(torch.cat([p.grad.flatten() for p in layer.parameters()]).norm()) == pytest.approx(2.0, rel=1e-4)
    assert train.parse_args([]).grad_clip == 10.0 and train.parse_args(["--grad-clip", "0"]).grad_clip == 0


def test_validation_loss_is_nan_not_zero_when_no_batch_is_finite():
    state = tiny_state(lambda outputs, targets: (torch.tensor(math.nan), {}))
    loader = [(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(0, 6))]
    assert math.isnan(validation_loss(state.model, state.loss_fn, loader, state))


@pytest.mark.slow
def test_a_checkpoint_with_non_finite_weights_is_never_written(tiny_voc, tmp_path, monkeypatch, capsys):
    epoch_of = loop.train_one_epoch

    def poisoning(state, loader, epoch, progress=True, **kwargs):
        stats = epoch_of(state, loader, epoch, progress, **kwargs)
        if epoch == 1:
            with torch.no_grad():
                next(state.model.parameters()).fill_(math.nan)
        return stats

    monkeypatch.setattr(loop, "train_one_epoch", poisoning)
    assert train.main(run_args(tiny_voc, tmp_path, "--epochs", 3, "--eval-period", 0, "--no-ema")) == 1
    assert "not finite" in capsys.readouterr().err
    last = read_checkpoint(tmp_path / "exp" / "last.pth")
    assert last["epoch"] == 0 and not nonfinite_tensors(last)


def fake_validation(monkeypatch, losses: dict) -> None:
    """Validation loss by epoch (so best.pth is known in advance), whichever process computes it."""
    current = {}
    end_of_epoch = loop.EpochLoop.end_of_epoch

    def recording(epoch_loop, epoch, stats, val_loader):
        current["epoch"] = epoch
        return end_of_epoch(epoch_loop, epoch, stats, val_loader)

    monkeypatch.setattr(loop.EpochLoop, "end_of_epoch", recording)
    monkeypatch.setattr(loop, "validation_loss", lambda *a: losses[current["epoch"]])


@pytest.mark.slow
def test_a_kill_between_the_checkpoint_writes_never_leaves_best_stale(tiny_voc, tmp_path, monkeypatch):
    fake_validation(monkeypatch, {0: 2.0, 1: 1.0, 2: 3.0})  # epoch 2 (index 1) is the best
    save = loop.save_atomic
    writes = []

    def killed_between_the_two_writes_of_epoch_2(obj, path):
        if obj["epoch"] == 1 and writes.count(1) == 1:
            raise Killed
        writes.append(obj["epoch"])
        save(obj, path)

    monkeypatch.setattr(loop, "save_atomic", killed_between_the_two_writes_of_epoch_2)
    with pytest.raises(Killed):
        train.main(run_args(tiny_voc, tmp_path, "--epochs", 3, "--eval-period", 0))
    monkeypatch.setattr(loop, "save_atomic", save)
    run = tmp_path / "exp"
    assert train.main(["--resume", str(run / "last.pth"), "--quiet", "--workers", "0"]) == 0
    best, last = read_checkpoint(run / "best.pth"), read_checkpoint(run / "last.pth")
    assert best["epoch"] == 1 and best["best_fitness"] == -1.0
    assert last["epoch"] == 2 and [r["best"] for r in last["results"]] == [True, True, False]


@pytest.mark.slow
def test_ctrl_c_during_validation_leaves_that_epoch_incomplete(tiny_voc, tmp_path, monkeypatch, capsys):
    evaluate = loop.evaluate
    calls = []

    def interrupted_in_third_evaluation(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return evaluate(*args)

    monkeypatch.setattr(loop, "evaluate", interrupted_in_third_evaluation)
    assert train.main(run_args(tiny_voc, tmp_path, "--epochs", 3, "--eval-period", 1)) == 130
    run = tmp_path / "exp"
    assert "holds epoch 2, the last complete one" in capsys.readouterr().out
    last = read_checkpoint(run / "last.pth")
    assert last["epoch"] == 1 and [r["epoch"] for r in last["results"]] == [1, 2]
    assert read_checkpoint(run / "interrupted.pth")["optimizer"] is None  # weights of the moment, not resumable
    assert train.main(["--resume", str(run / "interrupted.pth"), "--quiet"]) == 1

    assert train.main(["--resume", str(run / "last.pth"), "--quiet", "--workers", "0"]) == 0
    rows = read_checkpoint(run / "last.pth")["results"]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(r["map50"] is not None for r in rows)
    assert len(calls) == 4  # the interrupted evaluation was done again


@pytest.mark.slow
def test_resume_removes_temporaries_a_killed_write_left(tiny_voc, tmp_path, capsys):
    assert train.main(run_args(tiny_voc, tmp_path, "--epochs", 1, "--eval-period", 0)) == 0
    run = tmp_path / "exp"
    stale = run / ".best.pth.k2j4x_9q.tmp"
    stale.write_bytes(b"half a checkpoint")
    keep = run / ".notes.tmp"  # not one of ours
    keep.write_text("mine")
    last = read_checkpoint(run / "last.pth")
    last["args"]["epochs"] = 2
    torch.save(last, run / "last.pth")
    assert train.main(["--resume", str(run / "last.pth"), "--quiet", "--workers", "0"]) == 0
    assert not stale.exists() and keep.exists()
    assert f"removed {stale}" in capsys.readouterr().out


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_open(tmp_path / "f.bin") as f:
            f.write(b"x")
        plain = tmp_path / "plain"
        plain.write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.bin").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_weights_file_that_runs_code_is_refused_and_nothing_runs(tiny_voc, tmp_path, capsys):
    import predict
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(1)}, "payload": RunsCode(marker)}, evil)
    with pytest.raises(ValueError, match=f"{evil}: not a plain weights file: it asks to run or build posix.system"):
        read_checkpoint(evil)
    image = tiny_voc / "JPEGImages" / "img00.png"
    assert predict.main(["--weights", str(evil), "--img", str(image), "--out", str(tmp_path / "out")]) == 1
    assert "not a plain weights file" in capsys.readouterr().err
    assert train.main(run_args(tiny_voc, tmp_path, "--epochs", 1, "--weights", evil)) == 1
    assert train.main(["--resume", str(evil)]) == 1
    assert not marker.exists()


def test_recipe_then_config_then_flags(tmp_path):
    reference = train.parse_args(["--recipe", "reference"])
    for key, value in RECIPES["reference"].items():
        assert getattr(reference, key) == (list(value) if isinstance(value, tuple) else value), key
    plain = vars(train.make_parser().parse_args([]))  # the parser's own defaults are the default recipe
    for key, value in RECIPES["default"].items():
        assert plain[key] == (list(value) if isinstance(value, tuple) else value), key
    assert train.parse_args(["--recipe", "reference", "--lr", "0.02"]).lr == 0.02
    (tmp_path / "run.yaml").write_text("recipe: reference\nlr: 0.03\nchannels_last: auto\n")
    from_config = train.parse_args(["--config", str(tmp_path / "run.yaml")])
    assert (from_config.optimizer, from_config.lr, from_config.channels_last) == ("sgd", 0.03, "on")
    assert train.parse_args(["--config", str(tmp_path / "run.yaml"), "--lr", "0.04"]).lr == 0.04


def test_reference_init_is_normal_002():
    from nets.yolo import YoloBody
    torch.manual_seed(0)
    model = YoloBody(ANCHORS_MASK, 20)
    prior_bias = model.yolo_headP5[1].bias.detach().clone()
    model.init_normal()
    conv = model.backbone.resblock_body3.conv2.conv.weight.detach()
    assert float(conv.mean()) == pytest.approx(0.0, abs=2e-3) and float(conv.std()) == pytest.approx(0.02, rel=0.05)
    bn = model.backbone.conv1.bn
    assert float(bn.weight.std()) == pytest.approx(0.02, rel=0.5) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
    assert not torch.allclose(model.yolo_headP5[1].bias, prior_bias)


@pytest.mark.slow
def test_an_unreadable_validation_image_stops_training_naming_it(tmp_path, capsys):
    data = write_tiny_voc(tmp_path / "VOCbroken", 4)
    (data / "JPEGImages" / "img01.png").write_bytes(b"not an image")
    assert train.main(run_args(data, tmp_path, "--epochs", 1, "--eval-period", 0)) == 1
    err = capsys.readouterr().err
    assert "img01.png" in err and not (tmp_path / "exp" / "last.pth").exists()
