"""Where things are: the repository root and the default files in model_data/."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DATA = REPO_ROOT / "model_data"
DEFAULT_ANCHORS_FILE = MODEL_DATA / "yolo_anchors.txt"
