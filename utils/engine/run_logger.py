"""Run folders, results.csv, argument files and training curves."""
import csv
from pathlib import Path
from typing import Dict, List

import yaml
from utils.core.fileio import atomic_open, write_text_atomic
from utils.core.plotting import plt, save_figure


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


class ResultsLog:
    """results.csv with one row per epoch; rewritten whole (atomically) so rows are never torn.

    The columns are the rows' keys in the order first seen. The loss parts after train_loss are box, obj
    and cls, then se in a run with an SE-loss only, so that the columns of other runs stay as they were.
    """

    def __init__(self, run_dir: Path, rows: List[Dict] = ()):
        self.path = Path(run_dir) / "results.csv"
        self.rows = [dict(r) for r in rows]

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
            save_figure(fig, self.path.parent / filename)
