"""End-to-end runs of train.py on a tiny generated VOC dataset."""
import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import train
from tests.helpers.runs import base_args, checkpoint_tensors
from tests.helpers.voc import TINY_CLASSES as CLASSES, write_tiny_voc
from utils.engine.build import seeded_model
from utils.engine.run import load_data, start_run
from utils.engine.train_config import make_config
from utils.engine.checkpoint import read_checkpoint
from tests.conftest import ANCHORS_MASK


pytestmark = pytest.mark.usefixtures("scan_cache")

ROOT = Path(__file__).resolve().parents[1]


def epoch_losses(run_dir: Path) -> list:
    return [row["train_loss"] for row in read_checkpoint(run_dir / "last.pth")["results"]]


@pytest.mark.slow
def test_overfits_a_few_images(tiny_voc, tmp_path, capsys):
    args = base_args(tiny_voc, tmp_path, "--epochs", 40, "--eval-period", 40, "--batch-size", 4, "--mosaic", 0,
                     "--jitter", 0, "--scale", 1, 1, "--flip", 0, "--hsv", 0, 0, 0, "--warmup-epochs", 2,
                     "--lr", 0.1, "--no-ema", "--no-iou-cls", "--box-weight", 0.05)
    # IoU class targets < 1 keep the class BCE above 0, and the default box weight (0.4) puts CIoU's
    # slower floor in the total: the 5x fall is measured on the loss it was calibrated for
    assert train.main(args) == 0
    out = capsys.readouterr().out
    losses = epoch_losses(tmp_path / "exp")
    assert losses[-1] < losses[0] / 5, losses
    final_map = float(re.search(r"last evaluation .*?mAP@0\.5 ([0-9.]+)", out).group(1))
    assert final_map > 0.9, out


@pytest.mark.slow
def test_printed_map_equals_get_map_on_the_checkpoint(tiny_voc, tmp_path, capsys):
    assert train.main(base_args(tiny_voc, tmp_path, "--epochs", 2, "--eval-period", 1)) == 0
    printed = float(re.search(r"last evaluation .*?mAP@0\.5 ([0-9.]+)", capsys.readouterr().out).group(1))
    import get_map
    assert get_map.main(["--weights", str(tmp_path / "exp" / "last.pth"), "--data", str(tiny_voc), "--split", "val",
                         "--out", str(tmp_path / "map"), "--no-plots"]) == 0
    out = capsys.readouterr().out
    reported = float(re.search(r"mAP@0\.5 VOC all-point: ([0-9.]+)", out).group(1))
    assert reported == pytest.approx(printed, abs=5e-5), out


@pytest.mark.slow
def test_resume_continues_exactly_as_an_uninterrupted_run(tiny_voc, tmp_path):
    import torch
    full = tmp_path / "full"
    assert train.main(base_args(tiny_voc, full, "--epochs", 3, "--eval-period", 0, "--save-period", 1)) == 0
    # a run killed after epoch 1 has last.pth and best.pth as they were then: epoch_1.pth is both
    killed = tmp_path / "killed" / "exp"
    killed.mkdir(parents=True)
    for name in ("last.pth", "best.pth"):
        shutil.copy(full / "exp" / "epoch_1.pth", killed / name)
    assert train.main(["--resume", str(killed / "last.pth"), "--quiet", "--workers", "0"]) == 0
    for name in ("last.pth", "best.pth"):
        resumed, straight = read_checkpoint(killed / name), read_checkpoint(full / "exp" / name)
        assert resumed["epoch"] == straight["epoch"] and resumed["best_fitness"] == straight["best_fitness"], name
        assert resumed["ema"]["updates"] == straight["ema"]["updates"] > 0
        a, b = checkpoint_tensors(resumed), checkpoint_tensors(straight)
        assert a.keys() == b.keys() and len(a) > 400
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-7, msg=f"{name}: {key}")
        for row_a, row_b in zip(resumed["results"], straight["results"], strict=True):
            for key in ("train_loss", "val_loss", "box", "obj", "cls", "lr"):
                assert row_a[key] == pytest.approx(row_b[key], rel=1e-6), (name, key)
    assert read_checkpoint(killed / "last.pth")["epoch"] == 2


@pytest.mark.slow
def test_same_seed_same_losses(tiny_voc, tmp_path):
    for name in ("a", "b"):
        assert train.main(base_args(tiny_voc, tmp_path / name, "--epochs", 1, "--eval-period", 0)) == 0
    assert epoch_losses(tmp_path / "a" / "exp") == epoch_losses(tmp_path / "b" / "exp")


@pytest.mark.slow
def test_partial_load_reports_what_it_skipped(tiny_voc, tmp_path, capsys):
    from nets.yolo import YoloBody
    from utils.engine.checkpoint import save_atomic
    other = YoloBody(ANCHORS_MASK, 7, phi=1)  # other class count, other attention
    save_atomic(other.state_dict(), tmp_path / "other.pth")
    assert train.main(base_args(tiny_voc, tmp_path, "--epochs", 1, "--eval-period", 0, "--phi", 0,
                                "--weights", tmp_path / "other.pth")) == 0
    out = capsys.readouterr().out
    loaded = int(re.search(r"loaded (\d+) tensors", out).group(1))
    assert loaded > 100
    assert "yolo_headP5.1.weight (shape" in out and "feat1_att.fc.0.weight (not in this model)" in out


@pytest.mark.slow
def test_checkpoint_is_enough_for_prediction(tiny_voc, tmp_path):
    assert train.main(base_args(tiny_voc, tmp_path, "--epochs", 1, "--eval-period", 0, "--phi", 3)) == 0
    ckpt = read_checkpoint(tmp_path / "exp" / "last.pth")
    assert ckpt["class_names"] == CLASSES and ckpt["attention"] == "eca" and ckpt["input_size"] == [128, 128]
    for key in ("optimizer", "scheduler", "epoch", "args", "anchors", "anchors_mask", "scale_x_y", "ema"):
        assert ckpt.get(key) is not None, key
    assert ckpt["fusion"] == "concat" and ckpt["se_loss"] is False
    assert (tmp_path / "exp" / "best.pth").exists()  # by validation loss when evaluation is off
    assert (tmp_path / "exp" / "results.csv").read_text().count("\n") == 2
    header = (tmp_path / "exp" / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:6] == ["epoch", "train_loss", "box", "obj", "cls", "lr"]  # no se column without an SE-loss
    assert (tmp_path / "exp" / "loss.png").exists() and (tmp_path / "exp" / "run_args.yaml").exists()


@pytest.mark.slow
def test_no_val_loss_skips_validation_and_best_pth(tiny_voc, tmp_path, monkeypatch, capsys):
    import utils.engine.loop as loop

    def refuse(*args, **kwargs):
        raise AssertionError("validation loss computed under --no-val-loss")

    monkeypatch.setattr(loop, "validation_loss", refuse)
    assert train.main(base_args(tiny_voc, tmp_path, "--epochs", 2, "--eval-period", 0, "--no-val-loss")) == 0
    run = tmp_path / "exp"
    assert (run / "last.pth").exists() and not (run / "best.pth").exists()
    assert read_checkpoint(run / "last.pth")["epoch"] == 1
    assert "val_loss" not in (run / "results.csv").read_text().splitlines()[0].split(",")
    out = capsys.readouterr().out
    assert "val loss" not in out and "no best.pth" in out


def test_config_file_repeats_a_run_and_flags_override(tiny_voc, tmp_path):
    (tmp_path / "run.yaml").write_text("epochs: 3\nbatch_size: 4\nphi: 2\n")
    args = train.parse_args(["--config", str(tmp_path / "run.yaml"), "--batch-size", "2"])
    assert (args.epochs, args.batch_size, args.phi) == (3, 2, 2)
    (tmp_path / "bad.yaml").write_text("epochz: 3\n")  # refused with the nearest valid name (the schema's)
    with pytest.raises(ValueError, match=r"bad.yaml: unknown setting 'epochz' \(did you mean epochs\?\)"):
        train.parse_args(["--config", str(tmp_path / "bad.yaml")])
    (tmp_path / "bad.yaml").write_text("lr: fast\n")
    with pytest.raises(ValueError, match="bad.yaml: lr must be a number, found 'fast'"):
        train.parse_args(["--config", str(tmp_path / "bad.yaml")])


def test_bad_input_size_fails_clearly(tiny_voc, tmp_path, capsys):
    assert train.main(base_args(tiny_voc, tmp_path, "--input-size", 100, "--epochs", 1)) == 1
    assert "multiple of 32" in capsys.readouterr().err


def identical_images_voc(root: Path, n: int) -> Path:
    """n copies of one annotated image: any split of a batch then has the statistics of the whole."""
    write_tiny_voc(root, 1)
    for i in range(1, n):
        shutil.copy(root / "JPEGImages" / "img00.png", root / "JPEGImages" / f"img{i:02d}.png")
        xml = (root / "Annotations" / "img00.xml").read_text().replace("img00.png", f"img{i:02d}.png")
        (root / "Annotations" / f"img{i:02d}.xml").write_text(xml)
    for split in ("train", "val"):
        (root / "ImageSets/Main" / f"{split}.txt").write_text("".join(f"img{i:02d}\n" for i in range(n)))
    return root


@pytest.mark.slow
def test_torchrun_shards_are_disjoint_and_match_one_process(tmp_path):
    """Two gloo ranks of batch 2 train on disjoint halves of each global batch and end with identical
    weights, the weights one process with batch 4 ends with. For that to hold exactly the data are
    4 copies of one image (no augmentation): DDP averages the ranks' gradients of their own batch
    means, with BatchNorm statistics of their own 2 images, which equals the one-process gradient
    only when every half of a batch looks like the whole."""
    import json

    import torch
    data = identical_images_voc(tmp_path / "same", 4)
    flags = ["--epochs", 2, "--eval-period", 0, "--no-ema", "--optimizer", "sgd", "--warmup-epochs", 0,
             "--mosaic", 0, "--jitter", 0, "--scale", 1, 1, "--flip", 0, "--hsv", 0, 0, 0, "--seed", 3]
    probe = tmp_path / "probe"
    probe.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           str(ROOT / "tests" / "ddp_probe.py"), str(probe), *base_args(data, tmp_path / "ddp", *flags)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "ddp" / "exp").glob("*.pth")) == ["best.pth", "last.pth"]
    assert not (tmp_path / "ddp" / "exp2").exists()  # only rank 0 made a run folder

    seen = [[tuple(x) for x in json.loads((probe / f"rank{r}.json").read_text())] for r in (0, 1)]
    for epoch in (0, 1):
        shards = [{i for e, i in s if e == epoch} for s in seen]
        assert not shards[0] & shards[1] and len(shards[0]) == len(shards[1]) == 2, shards
        assert shards[0] | shards[1] == {0, 1, 2, 3}
    from nets.yolo import YoloBody
    names = [n for n, _ in YoloBody(ANCHORS_MASK, len(CLASSES)).named_parameters()]
    weights = [torch.load(probe / f"rank{r}.pt") for r in (0, 1)]
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in names)  # BN running stats stay per rank
    ddp = read_checkpoint(tmp_path / "ddp" / "exp" / "last.pth")["model"]
    assert all(torch.equal(ddp[k], weights[0][k]) for k in ddp)  # rank 0 saved its own weights

    assert train.main(base_args(data, tmp_path / "one", *flags, "--batch-size", 4)) == 0
    one = read_checkpoint(tmp_path / "one" / "exp" / "last.pth")["model"]
    torch.manual_seed(3)  # build_model's initialisation for --seed 3
    init = YoloBody(ANCHORS_MASK, len(CLASSES)).state_dict()
    one_step = torch.cat([(one[n] - init[n]).flatten() for n in names])
    ddp_step = torch.cat([(ddp[n] - init[n]).flatten() for n in names])
    gap = float((ddp_step - one_step).norm() / one_step.norm())
    assert float(one_step.norm()) > 0 and gap < 1e-3, gap  # float sums in another order, nothing more


@pytest.mark.parametrize("attention, options", [
    ("cbam", {}), ("csp1=se,upsample=ca", {}), ("feat1=eca", {}), ("feat1=eca", {"fusion": "gated"}),
    ("stage2=dia,feat2=enc", {"fusion": "msf", "se_loss": True}), ("csp2=cbam_joint", {"input_size": 64})])
def test_variants_of_one_seed_share_the_initialisation_of_every_layer_outside_their_blocks(attention, options):
    fusion = {"fusion": options.get("fusion", "concat")}
    plain = seeded_model(len(CLASSES), None, "normal", seed=3, **fusion).state_dict()
    variant = seeded_model(len(CLASSES), attention, "normal", seed=3, **options).state_dict()
    other_seed = seeded_model(len(CLASSES), None, "normal", seed=4, **fusion).state_dict()
    assert set(plain) < set(variant)  # the blocks add parameters, and nothing else changes
    for key, value in plain.items():
        assert torch.equal(variant[key], value), key
    assert not all(torch.equal(other_seed[k], v) for k, v in plain.items())
    blocks = [k for k in variant if k not in plain and variant[k].is_floating_point()]
    again = seeded_model(len(CLASSES), attention, "normal", seed=3, **options).state_dict()
    assert blocks and all(torch.equal(again[k], variant[k]) for k in blocks)


@pytest.mark.parametrize("fusion", ["gated", "msf"])
def test_a_fusion_starts_as_the_concat_model_in_every_tensor_of_the_same_shape(fusion):
    concat = seeded_model(len(CLASSES), None, "prior", seed=3).state_dict()
    fused = seeded_model(len(CLASSES), None, "prior", seed=3, fusion=fusion).state_dict()
    other = [k for k, v in concat.items() if fused[k].shape != v.shape]
    assert other == ["yolo_headP4.0.conv.weight"]  # the P4 head reads 256 channels instead of 384
    assert all(torch.equal(fused[k], v) for k, v in concat.items() if k not in other)
    assert any(k.startswith("p4_merge.fuse.") for k in fused) and not any(k.startswith("p4_merge") for k in concat)


def assert_image(path: Path, fmt: str) -> None:
    from PIL import Image
    with Image.open(path) as image:
        assert image.format == fmt and min(image.size) > 0, path
        image.verify()


@pytest.mark.slow
def test_pictures_of_the_data_leave_the_losses_unchanged(tiny_voc, tmp_path, monkeypatch):
    """labels.png and train_batch0.jpg are in the run folder; the batch picture is drawn once (of the epoch's
    two batches), and a run that draws it trains exactly as one that does not."""
    flags = ["--epochs", 1, "--eval-period", 0, "--mosaic", 1, "--mixup", 0.5]
    assert train.main(base_args(tiny_voc, tmp_path / "drawn", *flags)) == 0
    drawn = tmp_path / "drawn" / "exp"
    assert_image(drawn / "labels.png", "PNG")
    assert_image(drawn / "train_batch0.jpg", "JPEG")
    from utils.engine import loop
    calls = []
    monkeypatch.setattr(loop, "save_batch_picture", lambda path, images, targets, names: calls.append(images.shape))
    assert train.main(base_args(tiny_voc, tmp_path / "bare", *flags)) == 0
    assert calls == [(2, 3, 128, 128)] and not (tmp_path / "bare" / "exp" / "train_batch0.jpg").exists()
    rows = [[{k: v for k, v in row.items() if k != "seconds"} for row in read_checkpoint(run / "last.pth")["results"]]
            for run in (drawn, tmp_path / "bare" / "exp")]
    assert rows[0] == rows[1] and len(rows[0]) == 1


@pytest.mark.slow
def test_resume_keeps_labels_png_and_draws_no_batch_picture(tiny_voc, tmp_path):
    flags = ["--epochs", 2, "--eval-period", 0, "--save-period", 1, "--input-size", 64]
    assert train.main(base_args(tiny_voc, tmp_path, *flags)) == 0
    killed = tmp_path / "killed"
    killed.mkdir()
    shutil.copy(tmp_path / "exp" / "epoch_1.pth", killed / "last.pth")
    (killed / "labels.png").write_bytes(b"the run's own")
    assert train.main(["--resume", str(killed / "last.pth"), "--quiet", "--workers", "0"]) == 0
    assert read_checkpoint(killed / "last.pth")["epoch"] == 1  # it did train epoch 2
    assert (killed / "labels.png").read_bytes() == b"the run's own"
    assert not (killed / "train_batch0.jpg").exists()  # epoch 2 is not the run's first
    older = tmp_path / "older"  # a run folder from before labels.png existed gets one
    older.mkdir()
    shutil.copy(tmp_path / "exp" / "last.pth", older / "last.pth")
    assert train.main(["--resume", str(older / "last.pth"), "--quiet", "--workers", "0"]) == 0
    assert_image(older / "labels.png", "PNG")


def test_data_format_and_images_reach_the_scan_and_stay_in_the_run_settings(tiny_voc, tmp_path, capsys):
    from tests.helpers.voc import voc_to_coco
    coco_json = voc_to_coco(tiny_voc, tmp_path / "coco")
    images = tmp_path / "elsewhere"
    (tmp_path / "coco" / "images").rename(images)
    args = train.parse_args(["--data", str(coco_json), "--data-format", "coco", "--images", str(images),
                             "--train-split", "all", "--val-split", "all"])
    data = load_data(vars(args))
    assert len(data.train) == len(data.val) == 4
    assert "4 images used" in capsys.readouterr().out
    assert make_config({**vars(args), **data.used}, False, "off").images == str(images)
    with pytest.raises(Exception, match="voc"):  # a JSON is not a VOC dataset: the message names the format asked
        load_data(vars(train.parse_args(["--data", str(coco_json), "--data-format", "voc"])))


@pytest.mark.slow
def test_a_gated_run_with_the_se_loss_trains_and_its_checkpoint_loads_for_prediction(tiny_voc, tmp_path, capsys):
    from utils.engine.checkpoint import model_from_weights
    assert train.main(base_args(tiny_voc, tmp_path, "--epochs", 1, "--eval-period", 0, "--input-size", 64,
                                "--attention", "feat2=enc", "--fusion", "gated", "--se-loss", 0.2)) == 0
    out = capsys.readouterr().out
    assert "attention feat2=enc, fusion gated, SE-loss 0.2" in out and ", se " in out
    ckpt = read_checkpoint(tmp_path / "exp" / "last.pth")
    assert ckpt["fusion"] == "gated" and ckpt["se_loss"] is True and ckpt["args"]["se_loss"] == 0.2
    assert ckpt["results"][0]["se"] > 0
    header = (tmp_path / "exp" / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:7] == ["epoch", "train_loss", "box", "obj", "cls", "se", "lr"]
    model, meta = model_from_weights(tmp_path / "exp" / "last.pth")  # as predict.py and get_map.py load it
    assert (meta["fusion"], meta["se_loss"], model.p4_merge.fusion) == ("gated", True, "gated")
    assert model.feat2_att.se_head is not None
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ckpt["model"].items())


@pytest.mark.slow
def test_joint_cbam_and_dia_train_and_load_at_the_trained_input_size_only(tiny_voc, tmp_path, capsys):
    from utils.engine.checkpoint import model_from_weights
    assert train.main(base_args(tiny_voc, tmp_path, "--epochs", 1, "--eval-period", 0, "--input-size", 64,
                                "--attention", "feat1=cbam_joint,stage2=dia")) == 0
    ckpt = read_checkpoint(tmp_path / "exp" / "last.pth")
    model, meta = model_from_weights(tmp_path / "exp" / "last.pth")
    assert meta["input_size"] == [64, 64] and all(torch.equal(model.state_dict()[k], v) for k, v in ckpt["model"].items())
    model.eval()(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="64x64"):
        model(torch.zeros(1, 3, 96, 96))


def test_se_loss_without_an_enc_block_fails_clearly(tiny_voc, tmp_path, capsys):
    assert train.main(base_args(tiny_voc, tmp_path, "--epochs", 1, "--attention", "se", "--se-loss", 0.2)) == 1
    assert "--se-loss 0.2 needs an enc block" in capsys.readouterr().err


def test_a_run_from_before_fusion_and_se_loss_resumes_as_concat_without_se_loss(tmp_path):
    from utils.engine.checkpoint import CHECKPOINT_FORMAT, save_atomic
    from utils.engine.loop import checkpoint_meta
    old = {k: v for k, v in vars(train.parse_args([])).items() if k not in ("fusion", "se_loss")}
    save_atomic({"format": CHECKPOINT_FORMAT, "model": {}, "optimizer": {}, "args": old}, tmp_path / "last.pth")
    _, _, values = start_run(vars(train.parse_args(["--resume", str(tmp_path / "last.pth")])), train.make_parser)
    assert (values["fusion"], values["se_loss"]) == ("concat", 0.0)
    config = make_config({**values, "classes": "c.txt", "train_split": "train", "val_split": "val"}, False, "off")
    meta = checkpoint_meta(config, CLASSES, torch.zeros(6, 2))
    assert (meta["fusion"], meta["se_loss"]) == ("concat", False)


def test_a_run_from_before_iou_class_targets_resumes_and_repeats_without_them(tmp_path):
    from utils.engine.checkpoint import CHECKPOINT_FORMAT, save_atomic
    from utils.core.migrate import BEFORE_IT_EXISTED
    from utils.engine.loss import loss_settings

    assert BEFORE_IT_EXISTED["iou_cls"] is False and train.parse_args([]).iou_cls is True
    old = {k: v for k, v in vars(train.parse_args([])).items() if k != "iou_cls"}
    save_atomic({"format": CHECKPOINT_FORMAT, "model": {}, "optimizer": {}, "args": old}, tmp_path / "last.pth")
    _, _, values = start_run(vars(train.parse_args(["--resume", str(tmp_path / "last.pth")])), train.make_parser)
    assert values["iou_cls"] is False
    # an old run_args.yaml (it records the derived keys) repeats as it was; a hand-written config gets today's default
    (tmp_path / "run_args.yaml").write_text(yaml.safe_dump({**old, "amp_used": "off", "channels_last_on": True}))
    assert train.parse_args(["--config", str(tmp_path / "run_args.yaml")]).iou_cls is False
    (tmp_path / "mine.yaml").write_text("epochs: 3\n")
    assert train.parse_args(["--config", str(tmp_path / "mine.yaml")]).iou_cls is True
    assert loss_settings(argparse.Namespace(**old)).iou_cls is False
