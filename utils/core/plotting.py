"""The project's matplotlib: a headless backend, and figures saved atomically as PNG."""
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from utils.core.fileio import atomic_open  # noqa: E402

__all__ = ["plt", "save_figure", "safe_name"]


def save_figure(fig, path) -> Path:
    """Save as PNG through a temporary file and rename, then close the figure."""
    try:
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def safe_name(name: str) -> str:
    """`name` as a file-name part: runs of other characters become one underscore."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "class"
