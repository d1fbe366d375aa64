"""Run folders, results.csv, argument files and training curves."""
import csv
from pathlib import Path
from typing import Dict, List, Optional

import yaml
from utils.core.fileio import atomic_open, write_text_atomic
from utils.core.plotting import plt, save_figure
from utils.engine import distributed as dist
from utils.engine.optim import scaled_lr
from utils.engine.train_config import TrainConfig
from utils.eval.evaluator import CONF_THRES, IOU_THRES, NMS_THRES


def new_run_dir(save_dir: str = "logs", name: str = "exp") -> Path:
    """logs/exp, then logs/exp2, logs/exp3, ... : each run gets a new folder."""
    root = Path(save_dir)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, 100000):
        path = root / (name if i == 1 else f"{name}{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run folder name under {root}")


def run_folder(resume: Optional[str], save_dir: str, name: str) -> Optional[Path]:
    """The main process's run folder: the one of the checkpoint `resume`, or a new one under `save_dir`
    (new_run_dir); None on the other processes, and for a checkpoint whose folder does not exist."""
    if not dist.is_main():
        return None
    if resume:
        folder = Path(resume).resolve().parent
        return folder if folder.is_dir() else None  # read_checkpoint says what is missing
    return new_run_dir(save_dir, name)


def describe_run(config: TrainConfig, device, data, schedule_end: Optional[int] = None) -> None:
    """Print the run's device, data (train.RunData), model and schedule; `schedule_end`: the epochs of the
    lr schedule of a run extended beyond it."""
    print(f"device: {device}{' x' + str(dist.world_size()) if dist.world_size() > 1 else ''}; "
          f"mixed precision: {config.amp_used}; channels-last: {'on' if config.channels_last_on else 'off'}")
    print(f"data: {config.data}{' (embedded demo dataset)' if data.is_demo else ''}; {len(data.class_names)} classes "
          f"from {config.classes}; train {config.train_split} ({len(data.train)} images), "
          f"val {config.val_split} ({len(data.val)} images)")
    se_loss = f", SE-loss {config.se_loss:g}" if config.se_loss else ""
    extended = (f" (extended: the schedule of {schedule_end}, then its final lr)"
                if schedule_end and schedule_end < config.epochs else "")
    print(f"model: YOLOv4-tiny, attention {config.attention}, fusion {config.fusion}{se_loss}, input "
          f"{config.input_size}; {config.epochs} epochs{extended}, batch {config.batch_size}, {config.optimizer} lr "
          f"{config.lr:g} (batch 64) -> {scaled_lr(config.lr, config.batch_size * dist.world_size()):.2e}")
    if config.eval_period:
        print(f"evaluation every {config.eval_period} epochs on {config.val_split}: conf {CONF_THRES}, NMS "
              f"{NMS_THRES}, IoU {IOU_THRES} (the same evaluator and settings as get_map.py)")


def write_yaml(path, data: Dict) -> None:
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def read_yaml(path) -> Dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of argument names to values")
    return data


NOT_SCALARS = ("epoch", "best")  # the step of a row, and whether it made best.pth


def scalar_columns(row: Dict) -> Dict[str, float]:
    """The numbers of a results.csv row by column, in column order: what --logger tensorboard plots at step
    row['epoch'] (utils/engine/tb_logger.py); columns a row leaves out (no evaluation that epoch) are absent."""
    return {k: float(v) for k, v in row.items()
            if k not in NOT_SCALARS and isinstance(v, (int, float)) and not isinstance(v, bool)}


class ResultsLog:
    """results.csv with one row per epoch; rewritten whole (atomically) so rows are never torn.

    The columns are the rows' keys in the order first seen. The loss parts after train_loss are box, obj
    and cls, then se in a run with an SE-loss only, so that the columns of other runs stay as they were.
    """

    def __init__(self, run_dir: Path, rows: List[Dict] = (), eval_period: Optional[int] = None,
                 epochs: Optional[int] = None):
        self.path = Path(run_dir) / "results.csv"
        self.rows = [dict(r) for r in rows]
        self.eval_period, self.epochs = eval_period, epochs  # what map.png says before the first mAP

    def append(self, row: Dict) -> None:
        self.rows.append(dict(row))
        fields = list(dict.fromkeys(k for r in self.rows for k in r))
        with atomic_open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)
        self.plot()

    def plot(self) -> None:
        """loss.png (train and val loss) and map.png (mAP@0.5 and @0.5:0.95) beside results.csv."""

        epochs = [r["epoch"] for r in self.rows]
        for filename, keys, ylabel in (("loss.png", ("train_loss", "val_loss"), "loss"),
                                       ("map.png", ("map50", "map50_95"), "mAP")):
            fig, ax = plt.subplots(figsize=(6, 4))
            for key in keys:
                points = [(e, r[key]) for e, r in zip(epochs, self.rows) if r.get(key) not in (None, "")]
                if points:
                    ax.plot(*zip(*points), marker="o", markersize=3, label=key)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend()
            elif filename == "map.png":
                ax.text(0.5, 0.5, self.no_map_note(), ha="center", va="center", transform=ax.transAxes, wrap=True)
            save_figure(fig, self.path.parent / filename)

    def no_map_note(self) -> str:
        """What map.png says while it has no mAP: the epoch of the next evaluation, or that evaluation is off."""
        if self.eval_period == 0:
            return "evaluation is off (--eval-period 0): no mAP to plot"
        if not self.eval_period:
            return "no mAP yet"
        done = max((int(r["epoch"]) for r in self.rows), default=0)
        upcoming = (done // self.eval_period + 1) * self.eval_period
        return f"no mAP yet: first evaluation at epoch {min(upcoming, self.epochs or upcoming)}"
