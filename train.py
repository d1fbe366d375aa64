"""Train YOLOv4-tiny with pluggable attention: `python train.py --phi 2`.

With no dataset in VOCdevkit it trains on the embedded demo dataset (generated on first use) with a
schedule sized for it. `torchrun --nproc_per_node N train.py ...` trains with DistributedDataParallel.
"""
import argparse
import copy
import math
import sys
from pathlib import Path

import torch

from nets.attention import parse_attention, attention_to_str
from nets.yolo import YoloBody
from utils.engine import distributed as dist
from utils.core.amp import AMP_CHOICES, amp_name, resolve_amp, select_device
from utils.engine.checkpoint import load_weights, read_checkpoint, save_atomic
from utils.core.config import DEFAULT_ANCHORS_MASK, read_anchors, read_classes
from utils.data.augment import AugmentConfig
from utils.data.dataloader import YoloDataset, build_dataloader, mosaic_enabled
from utils.engine.distributed import unwrap
from utils.engine.ema import ModelEMA
from utils.engine.loss import YOLOLoss
from utils.engine.optim import build_optimizer, scaled_lr
from utils.engine.recipes import RECIPES, loss_kwargs
from utils.engine.run_logger import ResultsLog, new_run_dir, read_yaml, write_yaml
from utils.core.fileio import remove_stale_temporaries
from utils.engine.trainer import (TrainState, TrainingDiverged, make_checkpoint, nonfinite_tensors, restore_checkpoint,
                           train_one_epoch, validation_loss)

ROOT = Path(__file__).resolve().parent

# Defaults that depend on the data: the demo dataset gets a schedule that finishes in about
# 15 minutes on 2 CPU cores; a real dataset gets a full schedule. Flags given explicitly win.
SCHEDULE_DEFAULTS = {
    "dataset": {"epochs": 100, "input_size": 416, "eval_period": 5},
    "demo": {"epochs": 25, "input_size": 320, "eval_period": 5},
}


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--config", default=None, help="YAML of arguments (e.g. a run's run_args.yaml); flags given here override it")
    a("--recipe", default="default", choices=list(RECIPES), help="a set of defaults (utils/engine/recipes.py): this "
      "project's recipe for training from scratch, or bubbliiiing/yolov4-tiny-pytorch's; a config file and "
      "flags override it")
    a("--init", default="prior", choices=["prior", "normal"], help="initialisation: PyTorch's, with head biases at "
      "the priors, or the reference's normal(0, 0.02)")
    a("--phi", type=int, default=0, help="attention: 0 none, 1 se, 2 cbam, 3 eca, 4 ca")
    a("--attention", default=None, help="attention name or per-site spec (feat1=cbam,feat2=se,...); overrides --phi")
    a("--data", default="VOCdevkit", help="VOCdevkit root, one VOC year folder, or an annotation-lines file")
    a("--classes", default=None, help="classes file (default: model_data/voc_classes.txt, or the demo's classes)")
    a("--train-split", default=None, help="training split (default: trainval/train, see utils/data/voc.py)")
    a("--val-split", default=None, help="validation split (default: the evaluation split get_map.py uses)")
    a("--anchors", default=str(ROOT / "model_data/yolo_anchors.txt"), help="anchors file (w,h pairs in pixels)")
    a("--input-size", type=int, default=None, help="square input size, a multiple of 32 (default 416; 320 on the demo)")
    a("--epochs", type=int, default=None, help="total epochs, freeze epochs included (default 100; 25 on the demo)")
    a("--freeze-epochs", type=int, default=0, help="epochs with the backbone frozen first (useful with --weights)")
    a("--freeze-batch-size", type=int, default=16, help="batch size while the backbone is frozen")
    a("--batch-size", type=int, default=8, help="batch size (per process under torchrun)")
    a("--lr", type=float, default=None, help="learning rate for a batch of 64, scaled linearly to --batch-size "
      "(default: 0.01 for adamw/adam, 0.1 for sgd)")
    a("--min-lr", type=float, default=None, help="final learning rate for a batch of 64 (default: lr / 100)")
    a("--optimizer", default="adamw", choices=["sgd", "adam", "adamw"], help="optimizer")
    a("--momentum", type=float, default=0.937, help="SGD momentum / Adam beta1")
    a("--weight-decay", type=float, default=5e-4, help="weight decay (conv and linear weights only)")
    a("--lr-schedule", default="cos", choices=["cos", "step"], help="learning-rate decay after warmup")
    a("--warmup-epochs", type=float, default=3.0, help="linear warmup length in epochs")
    a("--mosaic", type=float, default=0.5, help="probability of a mosaic sample")
    a("--mixup", type=float, default=0.0, help="probability of mixing up a mosaic sample with another")
    a("--mosaic-ratio", type=float, default=0.7, help="mosaic and mixup only during this first share of epochs")
    a("--jitter", type=float, default=0.3, help="aspect-ratio jitter of training images")
    a("--scale", type=float, nargs=2, default=[0.5, 1.5], metavar=("MIN", "MAX"),
      help="range of a training image's size relative to the input")
    a("--flip", type=float, default=0.5, help="probability of a horizontal flip")
    a("--hsv", type=float, nargs=3, default=[0.1, 0.7, 0.4], metavar=("H", "S", "V"), help="hue, saturation, value gains")
    a("--label-smoothing", type=float, default=0.0, help="class label smoothing")
    a("--smooth-by-classes", action=argparse.BooleanOptionalAction, default=False,
      help="label smoothing to eps / C (the reference's form) instead of eps / 2")
    a("--focal-loss", action="store_true", help="sigmoid focal loss for classes")
    a("--box-weight", type=float, default=0.05, help="weight of the CIoU box loss")
    a("--obj-weight", type=float, default=1.0, help="weight of the objectness loss")
    a("--cls-weight", type=float, default=0.5, help="weight of the class loss")
    a("--obj-size-scale", action=argparse.BooleanOptionalAction, default=False,
      help="multiply the objectness weight by (input / 416)^2, as the reference")
    a("--cls-count-scale", action=argparse.BooleanOptionalAction, default=False,
      help="multiply the class weight by classes / 80, as the reference")
    a("--bce-clip", type=float, default=0.0, help="BCE on probabilities clipped to [c, 1 - c] (the reference: 1e-7; "
      "0: BCE from logits)")
    a("--ciou-alpha-grad", action=argparse.BooleanOptionalAction, default=False,
      help="keep CIoU's aspect weight alpha in the graph, as the reference")
    a("--assign-thres", type=float, default=0.213, help="assign a truth to every anchor with shape IoU above this "
      "(1.0: best anchor only, as the reference)")
    a("--hard-obj", action="store_true", help="objectness target 1 at positives (reference) instead of the IoU")
    a("--ignore-thres", type=float, default=0.5, help="predictions overlapping a truth above this IoU are not negatives")
    a("--scale-x-y", type=float, default=2.0, help="grid sensitivity of box centres: centre = (sigmoid(t) * s - "
      "(s - 1) / 2 + cell) * stride (darknet's yolov4-tiny uses 1.05, the reference 1.0)")
    a("--neighbor-cells", action=argparse.BooleanOptionalAction, default=True,
      help="also assign a truth to the 2 neighbouring cells nearest its centre (needs --scale-x-y >= 2)")
    a("--weights", default=None, help="initial weights: a checkpoint, a reference .pth or a darknet .weights file")
    a("--resume", default=None, help="continue the run of this last.pth exactly where it stopped")
    a("--save-dir", default="logs", help="folder of the run folders")
    a("--name", default="exp", help="run folder name (exp, exp2, ... when taken)")
    a("--save-period", type=int, default=0, help="also keep epoch_N.pth every N epochs (0: off)")
    a("--eval-period", type=int, default=None, help="mAP every N epochs and at the end (0: off; default 5)")
    a("--patience", type=int, default=0, help="stop after N epochs without mAP gain (0: off)")
    a("--workers", type=int, default=2, help="data loader worker processes")
    a("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    a("--seed", type=int, default=0, help="random seed: the same seed gives the same losses on CPU")
    a("--amp", default="auto", choices=AMP_CHOICES, help="mixed precision: auto picks bf16 on CPUs/GPUs that "
      "support it, fp16 on other GPUs, else off")
    a("--no-ema", dest="ema", action="store_false", help="turn off the EMA of the weights")
    a("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun on GPUs")
    a("--channels-last", default="on", choices=["on", "off"], help="channels-last memory format (faster in every "
      "setting measured: fp32 and bf16 on CPU)")
    a("--grad-clip", type=float, default=10.0, help="clip the gradients' total L2 norm to this (0: off); a step "
      "with non-finite gradients is always skipped")
    a("--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Flags over a --config YAML over the --recipe's values over the parser's defaults."""
    parser = make_parser()
    args, _ = parser.parse_known_args(argv)
    config = read_yaml(args.config) if args.config else {}
    unknown = sorted(k for k in config if k not in vars(args))
    if unknown:
        parser.error(f"{args.config}: unknown arguments {', '.join(unknown)}")
    recipe = args.recipe if args.recipe != parser.get_default("recipe") else config.get("recipe", args.recipe)
    if recipe not in RECIPES:
        parser.error(f"{args.config}: unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in RECIPES[recipe].items()}
    parser.set_defaults(**values, recipe=recipe)
    if config.get("channels_last") == "auto":  # run_args.yaml from before `auto` was dropped: it meant on
        config["channels_last"] = "on"
    parser.set_defaults(**{k: v for k, v in config.items() if k != "config"})
    return parser.parse_args(argv)


def fill_defaults(args: argparse.Namespace, is_demo: bool) -> None:
    """Data-dependent defaults (schedule, lr) and argument checks."""
    for key, value in SCHEDULE_DEFAULTS["demo" if is_demo else "dataset"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.lr is None:
        args.lr = 0.1 if args.optimizer == "sgd" else 0.01
    if args.min_lr is None:
        args.min_lr = args.lr / 100
    if args.input_size % 32 or args.input_size < 32:
        raise ValueError(f"--input-size must be a positive multiple of 32, got {args.input_size}")
    if args.epochs < 1 or args.freeze_epochs > args.epochs:
        raise ValueError(f"--epochs must be >= 1 and >= --freeze-epochs, got {args.epochs} and {args.freeze_epochs}")
    args.attention = attention_to_str(parse_attention(args.attention if args.attention is not None else args.phi))


def load_data(args):
    """(class names, train samples, val samples, is_demo); fills args.data/classes/splits with what is used."""
    from utils.data.demo_data import demo_classes_file
    from utils.data.voc import default_split, load_eval_samples, load_samples, resolve_classes, resolve_data

    data = resolve_data(args.data)
    is_demo = demo_classes_file(data) is not None
    args.classes = str(resolve_classes(data, args.classes or ROOT / "model_data/voc_classes.txt"))
    class_names = read_classes(args.classes)
    args.train_split = args.train_split or default_split(data, "train")
    args.val_split = args.val_split or default_split(data, "eval")
    args.data = str(data)
    train = load_samples(data, args.train_split, class_names)
    val, _ = load_eval_samples(data, args.val_split, class_names)  # an unreadable val image stops the run
    return class_names, train, val, is_demo


def build_model(args, num_classes: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    model = YoloBody(DEFAULT_ANCHORS_MASK, num_classes, attention=args.attention)
    if args.init == "normal":
        model.init_normal()
    if args.weights:
        load_weights(model, args.weights)
    if args.sync_bn and dist.world_size() > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if args.channels_last_on:
        model = model.to(memory_format=torch.channels_last)
    return model


def build_loss(args, anchors: torch.Tensor, num_classes: int) -> YOLOLoss:
    return YOLOLoss(anchors, num_classes, DEFAULT_ANCHORS_MASK, YoloBody.strides,
                    **loss_kwargs(args, num_classes, args.input_size))


def build_loaders(args, train_samples, val_samples, batch_size: int):
    size = (args.input_size, args.input_size)
    augment = AugmentConfig(jitter=args.jitter, scale=tuple(args.scale), flip=args.flip, hsv=tuple(args.hsv))
    train_set = YoloDataset(train_samples, size, train=True, mosaic=args.mosaic, mixup=args.mixup, augment=augment,
                            seed=args.seed)
    val_set = YoloDataset(val_samples, size, train=False, seed=args.seed)
    distributed = dist.world_size() > 1
    train_loader = build_dataloader(train_set, batch_size, args.workers, shuffle=True, seed=args.seed,
                                    distributed=distributed, drop_last=len(train_set) >= 2 * batch_size)
    val_loader = build_dataloader(val_set, batch_size, args.workers, shuffle=False, seed=args.seed)
    return train_loader, val_loader


def set_backbone_frozen(model: torch.nn.Module, frozen: bool) -> None:
    for p in unwrap(model).backbone.parameters():
        p.requires_grad_(not frozen)


def evaluate(args, model, val_samples, class_names, anchors, state: TrainState) -> dict:
    """mAP with the evaluator and settings get_map.py uses.

    The model is evaluated as get_map.py will load it from the checkpoint (contiguous memory, the
    evaluator's batch size), so both print the same numbers.
    """
    from utils.eval.evaluator import evaluate_model
    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    return evaluate_model(model, val_samples, class_names, args.input_size, anchors, DEFAULT_ANCHORS_MASK,
                          scale_x_y=args.scale_x_y, workers=args.workers, device=state.device,
                          amp=state.amp_dtype, progress=not args.quiet)


def checkpoint_meta(args, class_names, anchors) -> dict:
    return {"class_names": list(class_names), "anchors": anchors.tolist(), "anchors_mask": DEFAULT_ANCHORS_MASK,
            "attention": args.attention, "input_size": [args.input_size, args.input_size],
            "scale_x_y": args.scale_x_y, "args": serialisable(args)}


def serialisable(args) -> dict:
    return {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None), list))}


def start_run(args):
    """(run folder, checkpoint to resume or None, args): a new folder, or the resumed run's own."""
    if not args.resume:
        return (new_run_dir(args.save_dir, args.name) if dist.is_main() else None), None, args
    ckpt = read_checkpoint(args.resume)
    if ckpt.get("optimizer") is None or ckpt.get("args") is None:
        raise ValueError(f"{args.resume} cannot be resumed: it holds no optimizer state or run arguments "
                         "(use --weights to start a new run from it)")
    keep = {k: getattr(args, k) for k in ("resume", "workers", "device", "quiet")}
    saved = {**vars(make_parser().parse_args([])), **ckpt["args"], **keep}
    return Path(args.resume).resolve().parent, ckpt, argparse.Namespace(**saved)


def describe(args, device, amp_dtype, class_names, train_samples, val_samples, is_demo) -> None:
    from utils.eval.evaluator import CONF_THRES, IOU_THRES, NMS_THRES
    print(f"device: {device}{' x' + str(dist.world_size()) if dist.world_size() > 1 else ''}; "
          f"mixed precision: {amp_name(amp_dtype)}; channels-last: {'on' if args.channels_last_on else 'off'}")
    print(f"data: {args.data}{' (embedded demo dataset)' if is_demo else ''}; {len(class_names)} classes from "
          f"{args.classes}; train {args.train_split} ({len(train_samples)} images), "
          f"val {args.val_split} ({len(val_samples)} images)")
    print(f"model: YOLOv4-tiny, attention {args.attention}, input {args.input_size}; {args.epochs} epochs, batch "
          f"{args.batch_size}, {args.optimizer} lr {args.lr:g} (batch 64) -> "
          f"{scaled_lr(args.lr, args.batch_size * dist.world_size()):.2e}")
    if args.eval_period:
        print(f"evaluation every {args.eval_period} epochs on {args.val_split}: conf {CONF_THRES}, NMS {NMS_THRES}, "
              f"IoU {IOU_THRES} (the same evaluator and settings as get_map.py)")


def train(args) -> int:
    run_dir, resume, args = start_run(args)
    device = dist.setup(select_device(args.device))
    main_proc = dist.is_main()
    amp_dtype = resolve_amp(args.amp, device)
    class_names, train_samples, val_samples, is_demo = load_data(args)
    fill_defaults(args, is_demo)
    args.amp_used = amp_name(amp_dtype)
    args.channels_last_on = args.channels_last != "off"  # "auto" in an older checkpoint meant on
    anchors = read_anchors(args.anchors)
    model = build_model(args, len(class_names), device)
    state = TrainState(model=model, loss_fn=build_loss(args, anchors, len(class_names)).to(device),
                       optimizer=build_optimizer(model, args.optimizer, args.lr, args.momentum, args.weight_decay),
                       device=device, amp_dtype=amp_dtype, base_lr=0.0, epochs=args.epochs,
                       warmup_epochs=args.warmup_epochs, min_lr_ratio=args.min_lr / args.lr,
                       lr_schedule=args.lr_schedule, channels_last=args.channels_last_on,
                       grad_clip=args.grad_clip, ema=ModelEMA(model) if args.ema and main_proc else None,
                       scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None)
    if resume:
        restore_checkpoint(state, resume)
    if main_proc:
        for stale in remove_stale_temporaries(run_dir):
            print(f"removed {stale}, a temporary file left by a write that was killed")
        describe(args, device, amp_dtype, class_names, train_samples, val_samples, is_demo)
        write_yaml(run_dir / "run_args.yaml", serialisable(args))
        print(f"run folder: {run_dir}")
    loop = EpochLoop(args, state, run_dir, class_names, anchors, train_samples, val_samples, resume)
    try:
        loop.run()
    except KeyboardInterrupt:
        if main_proc:
            loop.interrupted()
        return 130
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if main_proc:
        loop.summary()
    return 0


class EpochLoop:
    """The epochs of one run: phases (frozen backbone or not), evaluation, checkpoints, early stopping."""

    def __init__(self, args, state: TrainState, run_dir, class_names, anchors, train_samples, val_samples, resume):
        self.args, self.state, self.run_dir = args, state, run_dir
        self.class_names, self.anchors = class_names, anchors
        self.train_samples, self.val_samples = train_samples, val_samples
        self.meta = checkpoint_meta(args, class_names, anchors)
        self.best = resume.get("best_fitness") if resume else None
        self.start_epoch = resume["epoch"] + 1 if resume else 0
        self.last_completed = self.start_epoch - 1
        self.results = ResultsLog(run_dir, resume.get("results", []) if resume else []) if dist.is_main() else None
        self.best_epoch = max((r["epoch"] for r in self.results.rows if r.get("best")), default=None) if self.results else None
        self.phase = None
        self.loaders = None

    def run(self) -> None:
        for epoch in range(self.start_epoch, self.args.epochs):
            self.enter_phase(epoch)
            train_loader, val_loader = self.loaders
            train_loader.set_epoch(epoch)
            train_loader.dataset.set_mosaic(mosaic_enabled(epoch, self.args.epochs, self.args.mosaic_ratio))
            try:
                stats = train_one_epoch(self.state, train_loader, epoch, progress=dist.is_main() and not self.args.quiet)
            except torch.cuda.OutOfMemoryError:
                raise SystemExit(f"error: out of GPU memory at batch size {self.phase[1]} "
                                 f"({'frozen' if self.phase[0] else 'unfrozen'} phase); lower "
                                 f"{'--freeze-batch-size' if self.phase[0] else '--batch-size'}") from None
            stop = self.end_of_epoch(epoch, stats, val_loader) if dist.is_main() else False
            self.last_completed = epoch  # complete only once evaluated and saved
            if dist.broadcast_flag(stop, self.state.device):
                break

    def enter_phase(self, epoch: int) -> None:
        """Freeze or unfreeze the backbone and (re)build the loaders when the phase changes."""
        frozen = epoch < self.args.freeze_epochs
        batch = self.args.freeze_batch_size if frozen else self.args.batch_size
        if self.phase == (frozen, batch):
            return
        self.phase = (frozen, batch)
        set_backbone_frozen(self.state.model, frozen)
        if dist.world_size() > 1:
            bare = unwrap(self.state.model)
            ids = [self.state.device.index] if self.state.device.type == "cuda" else None
            self.state.model = torch.nn.parallel.DistributedDataParallel(bare, device_ids=ids)
        self.state.base_lr = scaled_lr(self.args.lr, batch * dist.world_size())
        self.loaders = build_loaders(self.args, self.train_samples, self.val_samples, batch)

    def end_of_epoch(self, epoch: int, stats: dict, val_loader) -> bool:
        """Validate, log, save; returns True when early stopping says stop."""
        args, state = self.args, self.state
        eval_model = state.ema.module if state.ema else unwrap(state.model)
        row = {"epoch": epoch + 1, **stats, "val_loss": validation_loss(eval_model, state.loss_fn, val_loader, state)}
        last = epoch + 1 == args.epochs
        if args.eval_period and ((epoch + 1) % args.eval_period == 0 or last):
            metrics = evaluate(args, eval_model, self.val_samples, self.class_names, self.anchors, state)
            row.update(map50=metrics["map50"], map50_95=metrics["map50_95"])
            fitness = map_fitness(row)
        else:
            fitness = None if args.eval_period else -row["val_loss"]
        improved = fitness is not None and math.isfinite(fitness) and (self.best is None or fitness > self.best)
        if improved:
            self.best, self.best_epoch = fitness, epoch + 1
        row["best"] = improved
        ckpt = self.checkpoint(epoch, self.results.rows + [row])
        # best.pth before last.pth: a kill in between leaves last.pth at the previous epoch, so the
        # resumed run redoes this epoch and writes best.pth again; the other order would leave it stale
        if improved:
            save_atomic(ckpt, self.run_dir / "best.pth")
        save_atomic(ckpt, self.run_dir / "last.pth")
        if args.save_period and (epoch + 1) % args.save_period == 0:
            save_atomic(ckpt, self.run_dir / f"epoch_{epoch + 1}.pth")
        self.results.append(row)
        print(format_row(row, args.epochs))
        return bool(args.patience and self.best_epoch and epoch + 1 - self.best_epoch >= args.patience
                    and args.eval_period)

    def checkpoint(self, epoch: int, rows: list) -> dict:
        """The checkpoint after `epoch`; refuses (TrainingDiverged) when any of its tensors is not finite."""
        ckpt = make_checkpoint(self.state, epoch, self.meta, self.best, rows)
        bad = nonfinite_tensors(ckpt)
        if bad:
            raise TrainingDiverged(f"epoch {epoch + 1}: {len(bad)} tensors are not finite (e.g. {', '.join(bad[:3])}); "
                                   f"not saved, {self.run_dir / 'last.pth'} keeps the last good epoch")
        return ckpt

    def interrupted(self) -> None:
        """Ctrl-C: last.pth stays at the last complete epoch (exact resume); the weights of this moment
        go to interrupted.pth, for prediction or as --weights."""
        last = self.run_dir / "last.pth"
        try:
            ckpt = self.checkpoint(self.last_completed, self.results.rows)
            ckpt["optimizer"] = None  # mid-epoch weights: not a point to resume from
            save_atomic(ckpt, self.run_dir / "interrupted.pth")
            saved = f"saved the weights of this moment to {self.run_dir / 'interrupted.pth'}; "
        except TrainingDiverged as e:
            saved = f"{e}; "
        if last.exists():
            print(f"\ninterrupted: {saved}{last} holds epoch {self.last_completed + 1}, the last complete one; "
                  f"continue with python train.py --resume {last}")
        else:
            print(f"\ninterrupted before the first epoch was complete: {saved}nothing to resume")

    def summary(self) -> None:
        rows = self.results.rows
        evaluated = [r for r in rows if r.get("map50") is not None]
        print(f"done: {len(rows)} epochs in {sum(r['seconds'] for r in rows) / 60:.1f} min; run folder {self.run_dir}")
        if evaluated:
            last = evaluated[-1]
            best = max(evaluated, key=map_fitness)
            print(f"last evaluation (epoch {last['epoch']}, last.pth): mAP@0.5 {last['map50']:.4f}, "
                  f"mAP@0.5:0.95 {last['map50_95']:.4f}")
            print(f"best: {self.run_dir / 'best.pth'} (epoch {best['epoch']}): mAP@0.5 {best['map50']:.4f}, "
                  f"mAP@0.5:0.95 {best['map50_95']:.4f}")
        elif (self.run_dir / "best.pth").exists():
            print(f"best (by validation loss): {self.run_dir / 'best.pth'} (epoch {self.best_epoch})")


def map_fitness(row: dict) -> float:
    """What best.pth maximises: 0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95 (mAP@0.5 alone without COCO numbers)."""
    if row.get("map50_95") is None:
        return row["map50"]
    return 0.1 * row["map50"] + 0.9 * row["map50_95"]


def format_row(row: dict, epochs: int) -> str:
    text = (f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f} (box {row['box']:.4f}, obj {row['obj']:.4f}, "
            f"cls {row['cls']:.4f}), val loss {row['val_loss']:.4f}, lr {row['lr']:.2e}, {row['seconds']:.0f}s")
    if row.get("map50") is not None:
        text += f"; mAP@0.5 {row['map50']:.4f}, mAP@0.5:0.95 {row['map50_95']:.4f}"
    return text + (" *" if row.get("best") else "")


def main(argv=None) -> int:
    from utils.ops.image import ImageReadError
    from utils.data.voc import DatasetError
    args = parse_args(argv)
    try:
        return train(args)
    except (DatasetError, ImageReadError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        dist.teardown()


if __name__ == "__main__":
    sys.exit(main())
