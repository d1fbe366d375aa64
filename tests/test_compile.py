"""--compile: torch.compile (inductor) of the model's forward and backward pass, with its eager fallback.

The first test compiles YoloBody once (input 64, batch 2, fp32): about a minute on 2 cores with a cold inductor
cache, seconds with a warm one (~/.cache or /tmp/torchinductor_$USER); the other tests reuse that compilation or
compile nothing.
"""
import shutil

import pytest
import torch

import train
from tests.helpers import samples
from utils.engine import compile as compile_mod
from utils.engine.checkpoint import read_checkpoint
from utils.engine.compile import GuardedForward, compile_model, compile_run, is_compiled
from utils.engine.trainer import TrainState, train_step

pytestmark = pytest.mark.usefixtures("scan_cache")

# compiled and eager fp32 losses of the same run agree to this (relative) over its first epochs
LOSS_RTOL = 1e-4


def short_run(data, save_dir, *extra) -> list:
    return samples.run_args(data, save_dir, "--amp", "off", "--eval-period", "0", "--epochs", "2", *extra)


def losses(ckpt) -> list:
    return [row[k] for row in ckpt["results"] for k in ("train_loss", "val_loss", "box", "obj", "cls")]


@pytest.fixture(autouse=True)
def said(monkeypatch):
    """The fallback lines printed in this test (the once-per-process records start empty: no failure yet)."""
    record = []
    monkeypatch.setattr(compile_mod, "_said", record)
    monkeypatch.setattr(compile_mod, "_failed", [])
    return record


@pytest.mark.slow
@pytest.mark.skipif(compile_mod.no_compiler_reason() is not None, reason="no C++ compiler: inductor cannot run")
def test_compiled_run_matches_eager_and_resumes_exactly(tiny_voc, tmp_path, said):
    eager, full = tmp_path / "eager", tmp_path / "full"
    assert train.main(short_run(tiny_voc, eager)) == 0
    assert train.main(short_run(tiny_voc, full, "--compile", "all", "--save-period", 1)) == 0
    assert not said, said  # compiled, no fallback
    straight = read_checkpoint(full / "exp" / "last.pth")
    assert straight["args"]["compile"] == "all"
    for key in ("model", "train_model"):
        assert not [k for k in straight[key] if "_orig_mod" in k]
        assert straight[key].keys() == read_checkpoint(eager / "exp" / "last.pth")[key].keys()
    assert losses(straight) == pytest.approx(losses(read_checkpoint(eager / "exp" / "last.pth")), rel=LOSS_RTOL)
    killed = tmp_path / "killed" / "exp"
    killed.mkdir(parents=True)
    shutil.copy(full / "exp" / "epoch_1.pth", killed / "last.pth")
    assert train.main(["--resume", str(killed / "last.pth"), "--quiet", "--workers", "0", "--compile", "all"]) == 0
    resumed = read_checkpoint(killed / "last.pth")
    assert losses(resumed) == losses(straight)
    for key in ("model", "train_model"):
        for name, tensor in straight[key].items():
            assert torch.equal(resumed[key][name], tensor), (key, name)


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y, y.mean((2, 3))


def tiny_loss(outputs, targets):
    loss = outputs[0].square().mean() + (outputs[1] - targets).abs().mean()
    return loss, {"box": loss.detach()}


def tiny_steps(model, steps=2):
    torch.manual_seed(0)
    state = TrainState(model=model, loss_fn=tiny_loss, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                       device=torch.device("cpu"), amp_dtype=None, base_lr=0.1, epochs=1, warmup_epochs=0.0,
                       min_lr_ratio=0.01, lr_schedule="cos")
    x, t = torch.rand(2, 3, 8, 8), torch.rand(2, 4)
    return [train_step(state, x, t)["loss"] for _ in range(steps)]


def fresh_tiny():
    torch.manual_seed(0)
    return Tiny()


def test_a_compiler_error_falls_back_to_eager_said_once(monkeypatch, said, capsys):
    def failing_backend(graph, example_inputs):
        raise RuntimeError("inductor: unsupported operator aten.boom")

    monkeypatch.setattr(compile_mod, "BACKEND", failing_backend)
    eager_model = fresh_tiny()
    expected = tiny_steps(eager_model)
    model = compile_model(fresh_tiny())
    assert isinstance(model.forward, GuardedForward)
    assert tiny_steps(model) == expected  # the eager result, BatchNorm statistics counted once
    assert torch.equal(model.bn.running_mean, eager_model.bn.running_mean)
    assert torch.equal(model.bn.num_batches_tracked, eager_model.bn.num_batches_tracked)
    assert not is_compiled(model)
    lines = [line for line in capsys.readouterr().out.splitlines() if "--compile" in line]
    assert len(lines) == 1 and "compiling the model failed" in lines[0] and "eagerly" in lines[0], lines
    assert "aten.boom" in lines[0]
    later = compile_model(fresh_tiny())  # an evaluation's fresh copy after the failure: not compiled again
    assert not isinstance(later.forward, GuardedForward)
    later(torch.rand(1, 3, 8, 8))
    assert len(said) == 1


def test_without_a_cpp_compiler_the_model_stays_eager(monkeypatch, said, capsys):
    monkeypatch.setattr(compile_mod.shutil, "which", lambda name: None)
    model = compile_model(fresh_tiny())
    assert not is_compiled(model) and not isinstance(model.forward, GuardedForward)
    assert tiny_steps(model) == tiny_steps(fresh_tiny())
    out = capsys.readouterr().out
    assert out.count("--compile: no C++ compiler") == 1, out


def test_a_copy_of_a_compiled_model_runs_its_own_weights():
    import copy
    model = compile_model(fresh_tiny())
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.conv.weight.zero_()
        clone.conv.bias.zero_()
    out = clone.eval()(torch.rand(1, 3, 8, 8))[0]
    assert torch.count_nonzero(out - out.flatten()[0]) == 0  # the zeroed copy ran, not the original
    assert not [k for k in clone.state_dict() if "_orig_mod" in k]


@pytest.mark.skipif(compile_mod.no_compiler_reason() is not None, reason="no C++ compiler: inductor cannot run")
def test_an_se_loss_run_trains_eagerly_said_once(said, capsys):
    se, plain = fresh_tiny(), fresh_tiny()
    compile_run("all", se, None, se_loss=0.2)
    compile_run("all", plain, None, se_loss=0.0)
    assert se.forward.training is False and plain.forward.training is True
    out = capsys.readouterr().out
    assert out.count("--compile: with --se-loss the training step stays eager") == 1, out


@pytest.fixture
def graphs(monkeypatch):
    """The graphs compiled in this test: a backend that records each one and runs it as traced."""
    compiled = []

    def counting(graph, example_inputs):
        compiled.append(graph)
        return graph.forward

    monkeypatch.setattr(compile_mod, "BACKEND", counting)
    torch._dynamo.reset()
    return compiled


def test_compile_eval_compiles_the_evaluation_passes_only(graphs):
    off, model, ema = fresh_tiny(), fresh_tiny(), fresh_tiny().eval()
    compile_run("off", off, None, 0.0)
    assert not isinstance(off.forward, GuardedForward)
    compile_run("eval", model, ema, 0.0)
    x = torch.rand(2, 3, 8, 8)
    model(x)  # a training step: eager
    assert graphs == [] and is_compiled(ema)
    with torch.no_grad():
        model.eval()(x)
        ema(x)
    assert len(graphs) >= 1


class Broken(Tiny):
    """Two graphs: the first (with the BatchNorm update) runs before the second fails to compile."""

    def forward(self, x):
        y = self.bn(self.conv(x))
        torch._dynamo.graph_break()
        return y, y.mean((2, 3))


def test_a_failure_after_part_of_the_model_ran_counts_the_batchnorm_update_once(monkeypatch, said):
    calls = []

    def second_graph_fails(graph, example_inputs):
        calls.append(graph)
        if len(calls) > 1:
            raise RuntimeError("the second graph does not compile")
        return graph.forward

    monkeypatch.setattr(compile_mod, "BACKEND", second_graph_fails)
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = Broken()
    torch.manual_seed(0)
    model = compile_model(Broken())
    assert tiny_steps(model) == tiny_steps(eager)
    assert len(calls) == 2 and len(said) == 1
    assert torch.equal(model.bn.running_mean, eager.bn.running_mean)
    assert torch.equal(model.bn.num_batches_tracked, eager.bn.num_batches_tracked)


def test_one_batch_size_per_mode_is_compiled_another_runs_eagerly(graphs):
    model, eager = compile_model(fresh_tiny()), fresh_tiny()
    for batch in (2, 2, 1):  # the last batch of an epoch, smaller
        x = torch.rand(batch, 3, 8, 8)
        torch.testing.assert_close(model(x), eager(x))
    assert len(graphs) == 1
    x = torch.rand(2, 3, 16, 16)  # --progressive-size: the next epoch's larger images, same batch size
    torch.testing.assert_close(model(x), eager(x))
    assert len(graphs) == 2
    with torch.no_grad():
        model.eval()(torch.rand(1, 3, 8, 8))  # evaluation: a mode of its own, compiled at its first shape
    assert len(graphs) == 3
    for side in range(24, 112, 8):  # 11 more sizes: past dynamo's default limit of 8 graphs, still compiled
        model(torch.rand(2, 3, side, side))
    assert len(graphs) == 14
