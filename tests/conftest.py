import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(min(2, os.cpu_count() or 1))

ANCHORS_MASK = [[3, 4, 5], [1, 2, 3]]


@pytest.fixture
def root() -> Path:
    return ROOT
