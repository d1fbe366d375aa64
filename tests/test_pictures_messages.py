"""Issue 33 item 7, the pictures and messages a newcomer meets: map.png before the first evaluation, the colour
scale and title of heat and attention maps, labels of overlapping boxes, the names on ablation.png, what
`python -m utils.data.demo_data` prints, and where exported graphs go (and that git ignores them)."""
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from utils.data import demo_data
from utils.deploy import attention_maps, drawing, predict_modes
from utils.engine import run_logger
from utils.eval import ablation_table

ROOT = Path(__file__).resolve().parents[1]


def jet(value: int) -> np.ndarray:
    """The RGB colour heatmap_overlay gives a heat of value / 255 (OpenCV's JET)."""
    return cv2.cvtColor(cv2.applyColorMap(np.array([[value]], np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)[0, 0]


def map_png_texts(monkeypatch, tmp_path, rows, **settings):
    """The texts drawn on map.png's axes after ResultsLog writes `rows`."""
    seen = {}

    def keep(fig, path):
        seen[Path(path).name] = [t.get_text() for ax in fig.axes for t in ax.texts]
        run_logger.plt.close(fig)

    monkeypatch.setattr(run_logger, "save_figure", keep)
    log = run_logger.ResultsLog(tmp_path, **settings)
    for row in rows:
        log.append(row)
    return seen["map.png"]


def test_map_png_says_when_the_first_evaluation_comes(monkeypatch, tmp_path):
    rows = [{"epoch": 1, "train_loss": 2.0, "val_loss": 2.5}, {"epoch": 2, "train_loss": 1.5, "val_loss": 2.0}]
    assert map_png_texts(monkeypatch, tmp_path, rows, eval_period=5, epochs=25) == [
        "no mAP yet: first evaluation at epoch 5"]
    assert map_png_texts(monkeypatch, tmp_path, rows, eval_period=5, epochs=3) == [
        "no mAP yet: first evaluation at epoch 3"]  # the last epoch is always evaluated
    assert map_png_texts(monkeypatch, tmp_path, rows, eval_period=0, epochs=25) == [
        "evaluation is off (--eval-period 0): no mAP to plot"]
    scored = rows + [{"epoch": 3, "train_loss": 1.0, "val_loss": 1.5, "map50": 0.2, "map50_95": 0.1}]
    assert map_png_texts(monkeypatch, tmp_path, scored, eval_period=3, epochs=25) == []  # a curve, no note


def label_rects(image: np.ndarray, colors) -> list:
    """The rectangle (x1, y1, x2, y2, inclusive) of each colour's filled label, None where none shows: the pixels
    of that colour left by a 3x3 erosion (which removes the thin box outlines), grown back by one pixel."""
    rects = []
    for color in colors:
        mask = np.all(image == np.array(color, np.uint8), axis=2).astype(np.uint8)
        ys, xs = np.nonzero(cv2.erode(mask, np.ones((3, 3), np.uint8)))
        rects.append((int(xs.min()) - 1, int(ys.min()) - 1, int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else None)
    return rects


def test_labels_of_overlapping_boxes_do_not_hide_each_other():
    """Two boxes with the same top-left corner: the second label moves off the first (before: drawn on it)."""
    names = ["aa", "bb"]
    colors = drawing.class_colors(2)
    image = np.zeros((200, 200, 3), np.uint8)
    boxes = np.array([[40, 60, 150, 150], [40, 62, 120, 140]], np.float32)
    drawn = drawing.draw_detections(image, boxes, np.array([0.9, 0.8]), np.array([0, 1]), names)
    first, second = label_rects(drawn, colors)
    assert first is not None and second is not None, "each label keeps a visible filled rectangle"
    assert first[3] < second[1] or second[3] < first[1] or first[2] < second[0] or second[2] < first[0]
    assert first[3] <= 60  # the best detection's label keeps its place above its box


def test_labels_stay_inside_a_crowded_image():
    """Many boxes in a row: every label inside the image and none covering another."""
    image = np.zeros((120, 100, 3), np.uint8)
    boxes = np.array([[10, 30 + i, 90, 100] for i in range(5)], np.float32)
    drawn = drawing.draw_detections(image, boxes, np.full(5, 0.5), np.arange(5), [f"c{i}" for i in range(5)])
    rects = [r for r in label_rects(drawn, drawing.class_colors(5))]
    assert all(r is not None for r in rects)
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            assert a[3] < b[1] or b[3] < a[1], (a, b)


def scale_column(image: np.ndarray, width: int) -> np.ndarray:
    """The pixels of the colour-scale bar right of an image `width` wide: the column 6 px into the bar."""
    return image[:, width + 3 + 6]


def test_attention_map_has_a_colour_scale_and_names_its_site(monkeypatch, tmp_path):
    written = {}
    monkeypatch.setattr(attention_maps, "save_image", lambda path, image: written.setdefault(Path(path).name, image))
    image = np.full((60, 80, 3), 128, np.uint8)
    values = np.linspace(0.25, 0.75, 12 * 16, dtype=np.float32).reshape(12, 16)
    attention_maps.save_attention_maps(tmp_path, "im", image, {"feat1": ("spatial", values)})
    panel = written["im_att_feat1.jpg"]
    title_h = panel.shape[0] - 60
    assert title_h > 0 and panel.shape[1] > 80, "a title above and a colour scale beside the 80x60 map"
    bar = scale_column(panel[title_h:], 80)
    assert np.abs(bar[0].astype(int) - jet(255)).max() <= 8 and np.abs(bar[-1].astype(int) - jet(0)).max() <= 8
    title = drawing.captioned(np.zeros((1, panel.shape[1], 3), np.uint8), ["feat1: attention gate, mean over channels"])
    assert np.array_equal(panel[:title_h], title[:title_h]), "the title names the site"
    other = drawing.captioned(np.zeros((1, panel.shape[1], 3), np.uint8), ["csp1: attention gate, mean over channels"])
    assert not np.array_equal(panel[:title_h], other[:title_h])


def test_cam_panel_has_a_colour_scale():
    image = np.full((90, 160, 3), 100, np.uint8)
    heat = np.zeros((90, 160), np.float32)
    panel = drawing.heat_panel(image, heat, np.array([10, 10, 50, 50]), 0.9, 0, ["a"], ["a 0.90", "layercam @ P5"])
    assert panel.shape[1] > 320, "the 320-px panel has its colour scale on the right"
    bar = scale_column(panel[panel.shape[0] - 180:], 320)
    assert np.abs(bar[0].astype(int) - jet(255)).max() <= 8 and np.abs(bar[-1].astype(int) - jet(0)).max() <= 8


def test_ablation_png_names_a_phi_variant_by_its_block_as_the_table_does():
    rows = [{"variant": f"phi{i}", "attention": name, "map50": 0.5, "map50_std": None, "map50_95": 0.3,
             "map50_95_std": None, "latency_ms": 1.0, **{f"d_{k}{f}": None for k, _ in ablation_table.METRICS
                                                          for f in ablation_table.DIFF_FIELDS}}
            for i, name in enumerate(("none", "se", "cbam"))]
    rows.append({**rows[2], "variant": "feat1=cbam", "attention": "feat1=cbam"})
    fig = ablation_table.chart_figure(rows, 1, "phi0")
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    ablation_table.plt.close(fig)
    assert ticks == ["phi0 (none)", "phi1 (se)", "phi2 (cbam)", "feat1=cbam"]


def test_demo_data_says_what_it_wrote_and_how_to_use_it(tmp_path, monkeypatch, capsys):
    made = tmp_path / "demo-yolo"
    monkeypatch.setattr(demo_data, "ensure_demo_dataset", lambda root, style, data_format: made)
    assert demo_data.main(["--root", str(tmp_path), "--format", "yolo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == str(made)  # the path stays the last line, for scripts
    said = "\n".join(lines[:-1])
    assert f"in yolo format is in {made}" in said and "data.yaml" in said and "labels/<split>/" in said
    assert f"python train.py --data {made}" in said


def test_a_bare_export_name_goes_beside_the_weights(tmp_path):
    weights = tmp_path / "logs" / "exp" / "best.pth"
    assert predict_modes.export_destination("m.onnx", weights) == tmp_path / "logs" / "exp" / "m.onnx"
    assert predict_modes.export_destination("./m.onnx", weights) == Path("m.onnx")
    assert predict_modes.export_destination(tmp_path / "out" / "m.onnx", weights) == tmp_path / "out" / "m.onnx"


def test_export_model_writes_a_bare_name_beside_the_weights(tmp_path):
    calls = []
    yolo = SimpleNamespace(_source=str(tmp_path / "run" / "best.pth"),
                           export_onnx=lambda path, nms, calibration_images: calls.append(Path(path)) or Path(path))
    path, _ = predict_modes.export_model(yolo, "m.onnx")
    assert path == calls[0] == tmp_path / "run" / "m.onnx"


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git checkout")
@pytest.mark.parametrize("path", ["m.onnx", "model_int8.onnx", "logs/exp/best.onnx", "best.pth", "x.weights"])
def test_generated_outputs_are_ignored_by_git(path):
    assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, f"{path} is not ignored"


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_test_fixtures_are_not_ignored():
    assert subprocess.run(["git", "check-ignore", "-q", "tests/fixtures/checkpoints/new.pth"], cwd=ROOT).returncode == 1
