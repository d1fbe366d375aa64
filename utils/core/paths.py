"""Where things are: the repository root, the default files in model_data/, and the weights to use when none
are given."""
from pathlib import Path
from typing import Optional, Tuple

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DATA = REPO_ROOT / "model_data"
DEFAULT_ANCHORS_FILE = MODEL_DATA / "yolo_anchors.txt"
LOGS = Path("logs")  # relative: the logs/ folder of the working directory, where train.py writes its runs


# what a run leaves besides best.pth: last.pth after every epoch, interrupted.pth on Ctrl-C (utils/engine/loop.py)
FALLBACK_WEIGHTS = ("last.pth", "interrupted.pth")
HOW_TO_GET_WEIGHTS = ("train a model with `python train.py`, or pass --weights PATH (a train.py checkpoint, a "
                      "reference .pth with --classes, or darknet's yolov4-tiny.weights)")


def _newest(logs: Path, names) -> Optional[Path]:
    found = [p for name in names for p in logs.rglob(name) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def default_weights(logs=LOGS) -> Tuple[Path, str]:
    """(weights file, why) when no --weights is given: the newest (by modification time) best.pth anywhere
    under `logs` (default: ./logs of the working directory); without one, the newest last.pth or
    interrupted.pth (what a run stopped before its first evaluation leaves). FileNotFoundError naming the
    other .pth files found there and how to get weights when there is none of these."""
    logs = Path(logs)
    if logs.is_dir():
        best = _newest(logs, ("best.pth",))
        if best is not None:
            return best, f"the newest best.pth under {logs}/"
        other = _newest(logs, FALLBACK_WEIGHTS)
        if other is not None:
            return other, (f"no best.pth under {logs}/, as a run stopped before its first evaluation leaves: "
                           f"the newest {' or '.join(FALLBACK_WEIGHTS)}")
    rest = sorted(logs.rglob("*.pth"), key=lambda p: p.stat().st_mtime, reverse=True) if logs.is_dir() else []
    named = (f" (other checkpoints there, newest first: {', '.join(map(str, rest[:3]))}"
             f"{f' and {len(rest) - 3} more' if len(rest) > 3 else ''}; give one with --weights)") if rest else ""
    raise FileNotFoundError(f"no --weights given and no best.pth, last.pth or interrupted.pth under "
                            f"{logs}/{named}: {HOW_TO_GET_WEIGHTS}")
