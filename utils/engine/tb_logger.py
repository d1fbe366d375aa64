"""`--logger tensorboard`: a run's results.csv rows and pictures as TensorBoard events in its run folder.

The steps are epochs (results.csv's `epoch`), and each scalar is a results.csv column under the column's name
(lr, train_loss, box, obj, cls, se, val_loss, map50, map50_95, seconds; `run_logger.scalar_columns`), so the
curves equal the file row for row, to float32 (TensorBoard's scalar type). The pictures: labels.png and
train_batch0.jpg at step 1, and at each evaluation the F1 curve and the PR curve of each class, drawn as
get_map.py draws them (utils/eval/plots.py). A row is logged and flushed before the epoch's checkpoints are
written, so the events are never behind last.pth.

A resumed run appends a new event file to the folder, opened with TensorBoard's `purge_step` at the first epoch
it trains: TensorBoard's readers drop what an earlier writer logged from that step on (a killed run's epoch that
last.pth does not hold), so no step appears twice. Rows of the checkpoint that the events lack (a new folder, or
epochs trained with --logger none in between) are logged first, and the writer's purge_step is the first of them,
so the curves equal results.csv however the logger was turned on and off; the pictures not logged yet come too. `tensorboard --logdir logs` shows every run of
logs/ (one per run folder) overlaid. TensorBoard is an optional dependency (requirements-extra.txt): without it
the run stops before training with one line naming `pip install tensorboard`.
"""
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from utils.core.cli import UserError
from utils.engine.run_logger import scalar_columns
from utils.eval.plots import plot_f1_curve, plot_pr_curves

PICTURES = ("labels.png", "train_batch0.jpg")  # drawn by the run (utils/engine/run.py, loop.py), logged at step 1
EVENTS_GLOB = "events.out.tfevents.*"


def summary_writer_class():
    """torch.utils.tensorboard.SummaryWriter; UserError naming the package to install when it is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--logger tensorboard needs the tensorboard package, which is not installed: run "
                        "`pip install tensorboard` (or `pip install -r requirements-extra.txt`), or train without "
                        "--logger") from None
    return SummaryWriter


def logged_steps(run_dir: Path) -> Dict[str, set]:
    """{tag: steps} of what the event files in `run_dir` hold, as written (before TensorBoard's purges)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps: Dict[str, set] = {}
    for path in sorted(run_dir.glob(EVENTS_GLOB)):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                steps.setdefault(value.tag, set()).add(event.step)
    return steps


class NoBoard:
    """--logger none (and the processes other than the main one): logs nothing."""

    def epoch(self, row: Dict, metrics: Optional[Dict] = None) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoard:
    """The event file of one run folder; `rows`: the rows results.csv already holds (a resumed run's),
    `first_step`: the epoch (1-based) the run trains first."""

    def __init__(self, run_dir, rows: Sequence[Dict], first_step: int):
        writer_class = summary_writer_class()
        self.run_dir = Path(run_dir)
        fresh = not any(self.run_dir.glob(EVENTS_GLOB))
        steps = {} if fresh else logged_steps(self.run_dir)
        # the rows from the first one the events lack (epochs trained with --logger none, or a new folder) are
        # logged again, and what earlier writers logged from there on is purged (a killed run's unsaved epochs)
        missing = [int(row["epoch"]) for row in rows if int(row["epoch"]) not in steps.get("train_loss", ())]
        start = min(missing, default=first_step)
        self.writer = writer_class(str(self.run_dir), purge_step=None if fresh else start)
        self.pending = [name for name in PICTURES if start <= 1 or Path(name).stem not in steps]
        for row in rows:
            if int(row["epoch"]) >= start:
                self.scalars(row)
        self.pictures(1)
        self.writer.flush()

    def scalars(self, row: Dict) -> None:
        for name, value in scalar_columns(row).items():
            self.writer.add_scalar(name, value, row["epoch"])

    def image(self, tag: str, path: Path, step: int) -> None:
        with Image.open(path) as picture:
            pixels = np.asarray(picture.convert("RGB"))
        self.writer.add_image(tag, pixels, step, dataformats="HWC")

    def pictures(self, step: int) -> None:
        """The run's pictures not logged yet that its folder now holds."""
        for name in list(self.pending):
            if (self.run_dir / name).is_file():
                self.image(Path(name).stem, self.run_dir / name, step)
                self.pending.remove(name)

    def curves(self, metrics: Dict, step: int) -> None:
        """The F1 curve and each class's PR curve of an evaluation, drawn as get_map.py draws them."""
        with tempfile.TemporaryDirectory() as tmp:
            f1 = plot_f1_curve(metrics["per_class"], metrics["curves"], Path(tmp) / "f1_curve.png")
            self.image("f1_curve", f1, step)
            for path in plot_pr_curves(metrics["per_class"], metrics["curves"], metrics["settings"]["score_thr"],
                                       Path(tmp) / "pr_curves"):
                self.image(f"pr_curve/{path.stem}", path, step)

    def epoch(self, row: Dict, metrics: Optional[Dict] = None) -> None:
        """One results.csv row (and the pictures of its evaluation, `metrics`), flushed to disk."""
        self.scalars(row)
        self.pictures(row["epoch"])
        if metrics is not None and metrics.get("curves") is not None:
            self.curves(metrics, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_board(logger: str, run_dir, rows: List[Dict], first_step: int):
    """The run's logger of --logger (`logger`): TensorBoard (its command printed) or NoBoard."""
    if logger != "tensorboard":
        return NoBoard()
    board = TensorBoard(run_dir, rows, first_step)
    print(f"tensorboard: events in {run_dir}; view with tensorboard --logdir {Path(run_dir).parent}")
    return board
