"""Where things are: the repository root, the default files in model_data/, and the newest trained weights."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DATA = REPO_ROOT / "model_data"
DEFAULT_ANCHORS_FILE = MODEL_DATA / "yolo_anchors.txt"
LOGS = Path("logs")  # relative: the logs/ folder of the working directory, where train.py writes its runs


def newest_best(logs=LOGS) -> Path:
    """The newest (by modification time) best.pth anywhere under `logs` (default: ./logs of the working
    directory); FileNotFoundError saying how to get weights when there is none."""
    logs = Path(logs)
    found = sorted(logs.rglob("best.pth"), key=lambda p: p.stat().st_mtime) if logs.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no --weights given and no best.pth under {logs}/: train a model with "
                                "`python train.py`, or pass --weights PATH (a train.py checkpoint, a reference .pth "
                                "with --classes, or darknet's yolov4-tiny.weights)")
    return found[-1]
