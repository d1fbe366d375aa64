import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(min(2, os.cpu_count() or 1))

from utils.core.config import DEFAULT_ANCHORS_MASK  # noqa: E402  (after the sys.path line above)

# The one anchors mask of the tests (the reference's [[3, 4, 5], [1, 2, 3]]): `from tests.conftest import ANCHORS_MASK`.
ANCHORS_MASK = DEFAULT_ANCHORS_MASK


@pytest.fixture
def root() -> Path:
    return ROOT
