"""Sliced inference (--slice, utils/ops/slicing.py): tiles inside the image, boxes mapped back exactly, an object
cut by a tile border counted once, the same on the torch and onnx backends, and get_map.py's path the same as
YOLO.detect's."""
import cv2
import numpy as np
import pytest
import torch

import predict
from tests.helpers.models import make_checkpoint, rgb
from utils.core.detector_spec import DetectorSpec
from utils.eval.detect import detect_samples
from utils.ops.boxes import box_iou, detections_to_image
from utils.ops.pipeline import Thresholds
from utils.ops.slicing import Slicing, as_slicing, detect_sliced, tile_windows
from yolo import YOLO

TILE = 64
SPEC = DetectorSpec(("square",), [[8, 8]] * 6, ((3, 4, 5), (1, 2, 3)), (32, 16), (TILE, TILE), 1.0, True)


def oracle(items, score_cut: float = 0.99, score_whole: float = 0.8):
    """A stand-in backend that sees exactly what its tile holds: one box per white blob of each letterboxed item,
    in the item's own pixels (as a detector's clipped box of an object cut by the tile edge). Blobs touching the
    tile edge score higher than whole ones, so ranking by score alone would keep the cut piece."""
    found = []
    for item in items:
        count, _, stats, _ = cv2.connectedComponentsWithStats((item.input[..., 0] > 200).astype(np.uint8))
        rows = []
        for x, y, w, h, _ in stats[1:count]:
            edge = x == 0 or y == 0 or x + w == TILE or y + h == TILE
            rows.append([x, y, x + w, y + h, score_cut if edge else score_whole, 0])
        det = torch.tensor(rows, dtype=torch.float32).view(-1, 6)
        found.append(detections_to_image(det, item.lb, item.image_hw))
    return found


def squares(h: int, w: int, boxes):
    image = np.zeros((h, w, 3), np.uint8)
    for x1, y1, x2, y2 in boxes:
        image[y1:y2, x1:x2] = 255
    return image


def sliced(image, full: bool = False, thresholds=Thresholds(0.1, 0.3, 300)):
    det = detect_sliced(image, SPEC, thresholds, as_slicing(Slicing(TILE, 0.25, full), SPEC.input_size), oracle)
    return sorted(det[:, :4].tolist())


def test_tiles_cover_the_image_inside_it_with_the_overlap():
    windows = tile_windows((100, 150), Slicing((64, 64), 0.25))
    assert [w[0] for w in windows[:3]] == [0, 48, 86] and len(windows) == 2 * 3  # x: 0, 48, then 150 - 64
    assert all(x2 - x1 == 64 and y2 - y1 == 64 and x2 <= 150 and y2 <= 100 for x1, y1, x2, y2 in windows)
    assert tile_windows((40, 50), Slicing((64, 64), 0.25)) == [(0, 0, 50, 40)]  # smaller than a tile: itself


def test_a_box_in_a_tile_lands_at_its_image_coordinates():
    # one square inside each of tiles (0, 0), (0, 2) and (1, 1) only, none in an overlap
    truth = [[5, 7, 15, 20], [130, 3, 141, 14], [70, 75, 80, 90]]
    assert sliced(squares(100, 150, truth)) == sorted(map(list, map(lambda b: map(float, b), truth)))


@pytest.mark.parametrize("box", [[44, 10, 60, 30], [60, 10, 80, 30], [44, 30, 58, 50]])
def test_an_object_cut_by_a_tile_border_comes_out_once_whole(box):
    """Tiles span x 0-64, 48-112, 86-150 and y 0-64, 36-100. [44, 60] is whole in the first tile and cut to 75% by
    the second's edge at 48 (IoU 0.75: NMS by score alone would keep the higher-scoring piece); [60, 80] is whole
    in the second and cut to 20% by the first's edge at 64 (IoU 0.2: NMS at 0.3 would keep both); the third is cut
    in x, in y and in both by three tiles. With the whole image detected too (shrunk: a box near the truth) it is
    still one box."""
    image = squares(100, 150, [box])
    assert sliced(image) == [list(map(float, box))]
    (found,) = sliced(image, full=True)
    assert float(box_iou(torch.tensor([found]), torch.tensor([box], dtype=torch.float32))) > 0.6


def test_overlap_and_tile_are_checked():
    with pytest.raises(ValueError, match="--overlap 1.0: expected a fraction"):
        as_slicing(Slicing(64, 1.0), (64, 64))
    with pytest.raises(ValueError, match="--slice -3"):
        as_slicing(-3, (64, 64))
    assert as_slicing(0, (64, 64)) is None and as_slicing(True, (32, 64)).tile == (32, 64)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("slice") / "best.pth", (TILE, TILE))


def test_sliced_detection_is_the_same_on_torch_and_onnx(ckpt):
    image = rgb(150, 200)
    a = YOLO(ckpt, conf=0.3, amp="off").detect(image, slice=Slicing(TILE, 0.2))
    b = YOLO(ckpt, conf=0.3, backend="onnx").detect(image, slice=Slicing(TILE, 0.2))
    whole = YOLO(ckpt, conf=0.3, amp="off").detect(image)
    assert len(a) > len(whole) and len(a) == len(b)
    ia, ib = (np.lexsort(np.round(d.boxes.T[::-1], 1)) for d in (a, b))  # near-equal scores may swap places
    assert np.allclose(a.boxes[ia], b.boxes[ib], atol=1e-2) and np.allclose(a.scores[ia], b.scores[ib], atol=1e-4)
    assert (a.class_ids[ia] == b.class_ids[ib]).all()
    assert a.boxes.max() > 150 and (a.boxes[:, 2] <= 200).all() and (a.boxes[:, 3] <= 150).all()


def test_get_map_slices_as_yolo_detect_does(ckpt, tmp_path):
    from types import SimpleNamespace
    from PIL import Image
    paths = []
    for i, (h, w) in enumerate(((150, 200), (70, 90))):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rgb(h, w, seed=i)).save(paths[-1])
    samples = [SimpleNamespace(image_path=p) for p in paths]
    yolo = YOLO(ckpt, conf=0.3, amp="off", slice=Slicing(TILE, 0.2, False))
    found = detect_samples(yolo.model, samples, spec=yolo.spec, conf_thres=0.3, nms_thres=yolo.nms,
                           slicing=yolo.slice, progress=False)
    for path, det in zip(paths, found):
        expected = yolo.detect(str(path))
        assert len(det) == len(expected) > 0 and np.allclose(det[:, :4], expected.boxes, atol=1e-4)


def test_predict_slice_flags(ckpt, tmp_path, capsys):
    from PIL import Image
    Image.fromarray(rgb(150, 200)).save(tmp_path / "big.png")
    base = ["--weights", str(ckpt), "--img", str(tmp_path / "big.png"), "--conf", "0.3", "--amp", "off"]
    assert predict.main(base + ["--slice", "64", "--overlap", "0.2", "--save-txt", "--out", str(tmp_path / "o")]) == 0
    lines = (tmp_path / "o" / "labels" / "big.txt").read_text().splitlines()
    assert len(lines) == len(YOLO(ckpt, conf=0.3, amp="off").detect(str(tmp_path / "big.png"), slice=64))
    assert predict.main(base + ["--slice", "64", "--overlap", "1.5"]) == 1
    assert "--overlap 1.5: expected a fraction of the tile in [0, 1)" in capsys.readouterr().err
    assert predict.main(base + ["--slice", "64", "--fps"]) == 1  # --fps times the whole image, never the tiles
    assert "it does not time --slice" in capsys.readouterr().err


def test_get_map_refuses_a_bad_slice_before_the_scan(map_voc, tmp_path, capsys):
    import get_map
    from tests.helpers.models import save_random_checkpoint
    from tests.helpers.voc import MAP_CLASSES
    weights = save_random_checkpoint(tmp_path / "run" / "best.pth", MAP_CLASSES)
    assert get_map.main(["--weights", str(weights), "--data", str(map_voc), "--slice", "-3"]) == 1
    said = capsys.readouterr()
    assert "--slice -3: expected a tile size" in said.err and "scan" not in said.out


def test_get_map_slice_and_agnostic_flags_score_what_yolo_detects(map_voc, tmp_path, capsys):
    import json
    import get_map
    from tests.helpers.models import save_random_checkpoint
    from tests.helpers.voc import MAP_CLASSES, split_samples
    weights = save_random_checkpoint(tmp_path / "run" / "best.pth", MAP_CLASSES)
    base = ["--weights", str(weights), "--data", str(map_voc), "--amp", "off", "--no-plots", "--slice", "32"]
    counts = {}
    for extra in ([], ["--agnostic-nms"]):
        out = tmp_path / f"map{len(extra)}"
        assert get_map.main(base + extra + ["--out", str(out)]) == 0, capsys.readouterr().err
        summary = json.loads((out / "summary.json").read_text())
        assert summary["settings"]["slice"] == {"tile": [32, 32], "overlap": 0.2, "full": True}
        assert summary["settings"]["agnostic_nms"] == bool(extra)
        counts[bool(extra)] = len(json.loads((out / "detections.json").read_text()))
    yolo = YOLO(weights, conf=0.001, nms=0.5, amp="off", slice=32)
    assert counts[False] == sum(len(yolo.detect(str(s.image_path))) for s in split_samples(map_voc)) > 0
    assert counts[True] < counts[False]
    settings = YOLO(weights, amp="off", slice=32, agnostic_nms=True).val(str(map_voc))["settings"]  # as it detects
    assert settings["slice"] == {"tile": [32, 32], "overlap": 0.2, "full": True} and settings["agnostic_nms"] is True
