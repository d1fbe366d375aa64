"""What every test file shares: the project root on sys.path, two threads, and the shared fixtures:
scan_cache (the dataset scan cache in the test's own folder; a module that scans in every test says
`pytestmark = pytest.mark.usefixtures("scan_cache")`), tiny_voc (the tiny VOC of tests/helpers/voc.py, one per
module) and map_voc (get_map's VOCdevkit). Helpers are in tests/helpers/; no test file imports another."""
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(min(2, os.cpu_count() or 1))

# after the sys.path line above; ANCHORS_MASK, the one anchors mask of the tests (the reference's [[3, 4, 5],
# [1, 2, 3]]), is also `from tests.conftest import ANCHORS_MASK`
from tests.helpers.models import ANCHORS_MASK  # noqa: E402,F401
from tests.helpers.voc import write_map_voc, write_tiny_voc  # noqa: E402


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def scan_cache(tmp_path, monkeypatch) -> Path:
    """YOLO_SCAN_CACHE in this test's folder: no test reads a scan another wrote, none writes one outside."""
    cache = tmp_path / "scan_cache"
    monkeypatch.setenv("YOLO_SCAN_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory) -> Path:
    """The tiny VOC (4 images, classes red and blue, train = val), written once per module."""
    return write_tiny_voc(tmp_path_factory.mktemp("voc") / "VOCtiny", 4)


@pytest.fixture
def map_voc(tmp_path, scan_cache) -> Path:
    """get_map's VOCdevkit (tmp_path/VOCdevkit/VOC2007, test split of 3 images; tmp_path/classes.txt)."""
    return write_map_voc(tmp_path)
