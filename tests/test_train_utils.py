import pytest
import torch

from utils.core.amp import resolve_amp, cpu_supports_bf16
from utils.engine.checkpoint import save_atomic
from utils.engine.ema import ModelEMA
from utils.engine.optim import build_optimizer, lr_factor, scaled_lr
from utils.engine.run_logger import ResultsLog, new_run_dir
from tests.conftest import ANCHORS_MASK


def test_amp_auto_falls_back_to_fp32_without_cpu_bf16():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu, cpu_bf16=False) is None
    assert resolve_amp("auto", cpu, cpu_bf16=True) is torch.bfloat16
    assert resolve_amp("off", cpu, cpu_bf16=True) is None
    with pytest.raises(ValueError, match="CUDA"):
        resolve_amp("fp16", cpu)


def test_cpu_bf16_detection_reads_the_flags(tmp_path):
    with_flag = tmp_path / "cpuinfo1"
    with_flag.write_text("flags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    without = tmp_path / "cpuinfo2"
    without.write_text("flags\t\t: fpu sse avx2 avx512f\nmodel name\t: something bf16-ish\n")
    assert cpu_supports_bf16(str(with_flag)) is True
    assert cpu_supports_bf16(str(without)) is False
    assert cpu_supports_bf16(str(tmp_path / "missing")) is False


def test_lr_schedule_warmup_then_cosine_to_min():
    assert lr_factor(0.5, 10, 1, 0.01, "cos") == pytest.approx(0.5)
    assert lr_factor(1, 10, 1, 0.01, "cos") == pytest.approx(1.0)
    assert lr_factor(10, 10, 1, 0.01, "cos") == pytest.approx(0.01)
    assert lr_factor(5.5, 10, 1, 0.01, "cos") == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(8, 10, 0, 0.001, "step") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="cos or step"):
        lr_factor(5, 10, 1, 0.01, "linear")


def test_lr_scales_with_batch_against_64():
    assert scaled_lr(0.01, 8) == pytest.approx(0.00125)


def test_optimizer_keeps_bn_and_bias_out_of_weight_decay():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = build_optimizer(model, "adamw", 1e-3, 0.9, 5e-4)
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert decayed == {id(model[0].weight)}
    assert opt.param_groups[1]["weight_decay"] == 0


def test_ema_moves_towards_the_model():
    """decay 0.9, tau 2: after update k, d_k = 0.9 * (1 - exp(-k / 2)): 0.354122, 0.568909, 0.699183, 0.778198
    and 0.9 in the limit. The weights start at 0 and the model is set to 1, 3, 0, 2 before updates 1 to 4."""
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    ema = ModelEMA(model, decay=0.9, tau=2.0)
    expected, hand_decays = 0.0, [0.354122, 0.568909, 0.699183, 0.778198]
    for k, (target, d) in enumerate(zip([1.0, 3.0, 0.0, 2.0], hand_decays), start=1):
        with torch.no_grad():
            model.weight.fill_(target)
        ema.update(model)
        assert ema.updates == k and ema.current_decay() == pytest.approx(d, abs=1e-6)
        expected = d * expected + (1 - d) * target
        assert ema.module.weight.item() == pytest.approx(expected, abs=1e-6), k
    assert ema.module.weight.item() == pytest.approx(1.347206, abs=1e-5)  # after 0.645878, 1.660720, 1.161147
    ema.updates = 100_000
    assert ema.current_decay() == pytest.approx(0.9)


def test_run_dirs_are_numbered(tmp_path):
    assert new_run_dir(tmp_path, "exp").name == "exp"
    assert new_run_dir(tmp_path, "exp").name == "exp2"
    assert new_run_dir(tmp_path, "exp").name == "exp3"


def test_results_log_writes_csv_and_plots(tmp_path):
    log = ResultsLog(tmp_path)
    log.append({"epoch": 1, "train_loss": 2.0, "val_loss": 2.5})
    log.append({"epoch": 2, "train_loss": 1.0, "val_loss": 1.5, "map50": 0.3, "map50_95": 0.1})
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss,val_loss,map50") and len(lines) == 3
    assert (tmp_path / "loss.png").stat().st_size > 0 and (tmp_path / "map.png").stat().st_size > 0


class ExplodingObject:
    def __reduce__(self):
        raise OSError("disk full (simulated)")


def test_interrupted_checkpoint_write_leaves_previous_file_intact(tmp_path):
    path = tmp_path / "last.pth"
    save_atomic({"epoch": 1, "weights": torch.ones(3)}, path)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"epoch": 2, "bad": ExplodingObject()}, path)
    assert torch.load(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temporary file left behind


def test_darknet_file_of_another_class_count_loads_what_matches(tmp_path):
    from nets.darknet import save_darknet_weights
    from nets.yolo import YoloBody
    from utils.engine.checkpoint import load_weights
    coco = YoloBody(ANCHORS_MASK, 80)
    save_darknet_weights(coco, tmp_path / "coco.weights")
    model = YoloBody(ANCHORS_MASK, 3, phi=1)
    loaded, skipped = load_weights(model, tmp_path / "coco.weights", verbose=False)
    assert torch.equal(model.backbone.conv1.conv.weight, coco.backbone.conv1.conv.weight)
    assert torch.equal(model.yolo_headP4[0].bn.running_var, coco.yolo_headP4[0].bn.running_var)
    heads = [s for s in skipped if s.startswith("yolo_headP")]
    assert len(heads) == 4 and all("shape (255" in s for s in heads)  # the two output convs, weight and bias
    assert sum("(missing from file)" in s for s in skipped) == 6  # SE's two Linear layers at three sites
    assert loaded == len(model.state_dict()) - 4 - 6


def test_train_config_has_every_flag_is_frozen_and_reads_back_from_run_args(tmp_path):
    import dataclasses

    import train
    from utils.engine.run_logger import write_yaml
    from utils.engine.train_config import DERIVED_KEYS, TrainConfig, make_config
    dests = list(vars(train.make_parser().parse_args([])))
    assert [f.name for f in dataclasses.fields(TrainConfig)] == dests + list(DERIVED_KEYS)
    values = {**vars(train.parse_args(["--optimizer", "sgd"])), "classes": "c.txt", "train_split": "train",
              "val_split": "val"}
    config = make_config(values, is_demo=True, amp_used="fp32")
    assert (config.epochs, config.input_size, config.lr, config.min_lr) == (25, 320, 0.1, 0.1 / 100)
    assert config.attention == "none" and config.scale == (0.5, 1.5) and config.channels_last_on
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0
    saved = config.to_dict()
    assert list(saved) == dests + list(DERIVED_KEYS) and saved["hsv"] == [0.1, 0.7, 0.4]
    write_yaml(tmp_path / "run_args.yaml", saved)  # a run's own file repeats the run
    again = train.parse_args(["--config", str(tmp_path / "run_args.yaml"), "--seed", "1"])
    assert (again.optimizer, again.lr, again.epochs, again.seed) == ("sgd", 0.1, 25, 1)
    with pytest.raises(ValueError, match="multiple of 32"):
        make_config({**values, "input_size": 100}, is_demo=False, amp_used="fp32")


def test_every_script_shares_one_exit_code_rule(capsys):
    from utils.core.cli import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, UserError, choices_help, run_main

    def raising(error):
        def body():
            raise error
        return body

    assert run_main("x", lambda: None) == EXIT_OK == 0
    assert run_main("x", raising(UserError("bad flag"))) == EXIT_FAILURE == 1
    assert "x: error: bad flag" in capsys.readouterr().err
    assert run_main("x", raising(FileNotFoundError("no such file"))) == 1
    assert run_main("x", raising(RuntimeError("diverged")), failures=(RuntimeError,)) == 1
    assert run_main("x", raising(KeyboardInterrupt()), interrupted="run again") == EXIT_INTERRUPTED == 130
    assert "x: interrupted: run again" in capsys.readouterr().err
    assert run_main("x", raising(SystemExit(2))) == 1  # an argparse usage error
    assert run_main("x", raising(SystemExit(0))) == 0  # --help
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_main("x", raising(ZeroDivisionError()))
    assert choices_help({0: "none", 1: "se"}) == "0 none, 1 se"


def se_loss_state(se_weight: float):
    """A TrainState of a model with an enc block and its SE-loss head, and a loss of SE-loss weight `se_weight`."""
    from nets.yolo import YoloBody
    from utils.core.config import read_anchors
    from utils.core.paths import DEFAULT_ANCHORS_FILE
    from utils.engine.loss import LossSettings, YOLOLoss
    from utils.engine.trainer import TrainState
    torch.manual_seed(0)
    model = YoloBody(ANCHORS_MASK, 3, attention="feat2=enc", se_loss=True)
    settings = LossSettings(box_weight=0.05, scale_x_y=1.0, neighbor_cells=False, iou_cls=False, se_loss=se_weight)
    loss_fn = YOLOLoss(read_anchors(DEFAULT_ANCHORS_FILE), 3, ANCHORS_MASK, (32, 16), settings, 64, (1.0, 1.0))
    return TrainState(model=model, loss_fn=loss_fn, optimizer=build_optimizer(model, "adamw", 0.01, 0.9, 5e-4),
                      device=torch.device("cpu"), amp_dtype=None, base_lr=0.01, epochs=1, warmup_epochs=0,
                      min_lr_ratio=0.01, lr_schedule="cos")


SE_IMAGES = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
SE_TARGETS = torch.tensor([[0, 0, 0.5, 0.5, 0.4, 0.4], [1, 2, 0.4, 0.6, 0.3, 0.5]])


@pytest.mark.parametrize("se_weight", [0.0, 0.5])
def test_a_train_step_trains_the_se_head_only_with_an_se_loss(se_weight):
    from utils.engine.trainer import forward_loss, to_device, train_step
    state = se_loss_state(se_weight)
    images, targets = to_device(SE_IMAGES, SE_TARGETS, state)
    head = state.model.feat2_att.se_head
    loss, parts = forward_loss(state.model, state.loss_fn, images, targets, state)
    loss.backward()
    assert ("se" in parts) == (head.weight.grad is not None) == bool(se_weight)
    state.optimizer.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    assert train_step(state, images, targets) is not None
    after = state.model.state_dict()
    assert (not torch.equal(after["feat2_att.se_head.weight"], before["feat2_att.se_head.weight"])) == bool(se_weight)
    assert not torch.equal(after["backbone.conv1.conv.weight"], before["backbone.conv1.conv.weight"])


def test_the_validation_loss_holds_the_se_loss():
    from utils.engine.trainer import validation_loss
    state, plain = se_loss_state(0.5), se_loss_state(0.0)
    batches = [(SE_IMAGES, SE_TARGETS)]
    assert validation_loss(state.model, state.loss_fn, batches, state) > validation_loss(
        state.model, plain.loss_fn, batches, state)
