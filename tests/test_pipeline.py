"""letterbox -> forward -> decode -> select -> image pixels is composed once (utils/ops/pipeline.py): YOLO.detect,
evaluation's detect_samples, the CAM's detections and the exported graph's RawToDetections all run it."""
import types

import numpy as np
import torch
from PIL import Image

from tests.helpers.models import make_checkpoint, rgb
from utils.deploy.cam import detection_cams
from utils.deploy.export import RawToDetections
from utils.eval.detect import detect_samples
from utils.ops import pipeline
from utils.ops.boxes import detections_to_image
from yolo import YOLO


def test_every_torch_user_runs_the_one_pipeline_to_the_same_detections(tmp_path, monkeypatch):
    yolo = YOLO(make_checkpoint(tmp_path / "c.pth", obj_bias=1.0), conf=0.3, nms=0.4, max_det=5, amp="off")
    image = rgb(70, 120, 1)
    Image.fromarray(image).save(tmp_path / "a.png")
    calls = []
    real = pipeline.decode_candidates
    monkeypatch.setattr(pipeline, "decode_candidates", lambda *a, **k: calls.append(1) or real(*a, **k))

    found = yolo.detect(image)
    assert len(calls) == 1 and 0 < len(found) <= 5
    sample = types.SimpleNamespace(image_path=tmp_path / "a.png", exif_transpose=True)
    [evaluated] = detect_samples(yolo.model, [sample], conf_thres=0.3, nms_thres=0.4, max_det=5, progress=False,
                                 spec=yolo.spec)
    assert len(calls) == 2
    np.testing.assert_array_equal(evaluated[:, :4], found.boxes)
    np.testing.assert_array_equal(evaluated[:, 4], found.scores)
    np.testing.assert_array_equal(evaluated[:, 5].astype(np.int64), found.class_ids)
    cams = detection_cams(yolo.cam_detector(), image, top_k=0)
    assert len(calls) == 3
    np.testing.assert_array_equal(np.stack([c.box for c in cams]), found.boxes)
    assert [c.class_id for c in cams] == found.class_ids.tolist()

    batch, lb = yolo.preprocess(image)
    post = RawToDetections(yolo.anchors, yolo.anchors_mask, yolo.input_hw, yolo.scale_x_y, 0.3, 0.4, 5)
    graph = detections_to_image(post(*yolo.forward(batch))[:, 1:], lb, image.shape[:2])
    assert len(calls) == 4
    np.testing.assert_array_equal(graph[:, :4].numpy(), found.boxes)


def test_the_pieces_compose_to_detect_images(tmp_path):
    yolo = YOLO(make_checkpoint(tmp_path / "c.pth", obj_bias=1.0), conf=0.3, amp="off")
    images = [rgb(70, 120, 1), rgb(100, 40, 2)]
    whole = pipeline.detect_images(yolo.model, images, yolo.spec, yolo.thresholds, "cpu")
    items = [pipeline.letterbox_input(image, yolo.spec) for image in images]
    with torch.no_grad():
        outputs = pipeline.forward_fp32(yolo.model, pipeline.input_batch([i.input for i in items], "cpu"))
        det = pipeline.spec_decode_select(outputs, yolo.spec, yolo.thresholds, len(items))
    by_pieces = pipeline.to_image_pixels(det, items)
    assert len(whole) == 2 and all(torch.equal(a, b) for a, b in zip(whole, by_pieces))
    alone = [yolo.detect(image) for image in images]  # one image at a time: the same boxes as in a batch of two
    for one, batched in zip(alone, whole):
        np.testing.assert_allclose(one.boxes, batched[:, :4].numpy(), atol=1e-3)


def test_evaluation_takes_the_detectors_spec(tmp_path):
    """evaluate_model(spec=...) scores exactly what the loose facts it replaces score."""
    from tests.helpers.samples import write_samples
    from utils.eval.evaluator import evaluate_model
    yolo = YOLO(make_checkpoint(tmp_path / "c.pth", obj_bias=1.0), amp="off")
    samples = write_samples(tmp_path, [(60, 90), (80, 50)], [[5, 5, 40, 40], [10, 20, 45, 70]])
    model = yolo.model.eval()
    by_spec = evaluate_model(model, samples, yolo.class_names, spec=yolo.spec, progress=False)
    loose = evaluate_model(model, samples, yolo.class_names, list(yolo.input_hw), yolo.anchors, yolo.anchors_mask,
                           scale_x_y=yolo.scale_x_y, progress=False)
    assert sum(len(d) for d in by_spec["detections"]) > 0
    assert all(np.array_equal(a, b) for a, b in zip(by_spec["detections"], loose["detections"]))
    assert (by_spec["map50"], by_spec["settings"]) == (loose["map50"], loose["settings"])
