"""Files from other versions and other places (issue 27): checkpoints of every format this version reads, a
newer format, a zip bomb, an ONNX graph given as weights, the scan cache, and image paths that leave the dataset."""
import dataclasses
import json
import pickle
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import get_map
import train
from nets.yolo import YoloBody
from tests.conftest import ANCHORS_MASK
from tests.fixtures import make_checkpoints
from tests.helpers.voc import write_tiny_voc
from utils.core.config import read_classes
from utils.data import scan_cache, voc
from utils.data.annotations import DatasetError, Record, Sample
from utils.data.convert import convert
from utils.data.convert import main as convert_main
from utils.engine import checkpoint
from utils.engine.checkpoint import load_weights, read_checkpoint
from utils.engine.run import start_run


pytestmark = pytest.mark.usefixtures("scan_cache")

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "checkpoints"
FORMATS = ("reference_state_dict.pth", "model_dict.pth", "ours_v1_before_fusion.pth", "ours_v1.pth")
OURS = ("ours_v1_before_fusion.pth", "ours_v1.pth")


@pytest.mark.parametrize("name", FORMATS)
def test_every_older_checkpoint_format_still_loads(name):
    assert (FIXTURES / name).stat().st_size < 200_000
    model = YoloBody(ANCHORS_MASK, 1)
    loaded, skipped = load_weights(model, FIXTURES / name, verbose=False)
    expected = make_checkpoints.small_state_dict()
    assert loaded == len(expected)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in expected.items())
    assert all(s.endswith("(missing from file)") for s in skipped)


@pytest.mark.parametrize("name", OURS)
def test_our_checkpoints_keep_their_metadata_and_resume_reads_the_optimizer_state(name, tmp_path):
    ckpt = read_checkpoint(FIXTURES / name)
    assert (ckpt["class_names"], ckpt["input_size"], ckpt["scale_x_y"]) == (["thing"], [320, 320], 1.05)
    resumed = tmp_path / "run" / "last.pth"
    resumed.parent.mkdir()
    shutil.copy(FIXTURES / name, resumed)
    _, resume, settings = start_run(vars(train.parse_args(["--resume", str(resumed)])), train.make_parser)
    assert settings["epochs"] == 3 and settings["optimizer"] == "adam"
    params = [torch.nn.Parameter(t.clone()) for t in resume["model"].values()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    optimizer.load_state_dict(resume["optimizer"])
    want = make_checkpoints.optimizer_state(make_checkpoints.small_state_dict())["state"]
    assert len(optimizer.state) == len(params) == len(want)
    for i, p in enumerate(params):
        assert torch.equal(optimizer.state[p]["exp_avg"], want[i]["exp_avg"])


def test_a_newer_checkpoint_format_is_refused_naming_both_formats(tmp_path):
    ckpt = torch.load(FIXTURES / "ours_v1.pth", weights_only=True)
    newer = tmp_path / "newer.pth"
    torch.save({**ckpt, "format": "yolov4-tiny-attention/2"}, newer)
    with pytest.raises(ValueError) as caught:
        read_checkpoint(newer)
    message = str(caught.value)
    assert str(newer) in message and "'yolov4-tiny-attention/2'" in message
    assert "'yolov4-tiny-attention/1'" in message and "newer version" in message and "\n" not in message
    other = tmp_path / "other.pth"
    torch.save({"format": "someone-else/7", "model": ckpt["model"]}, other)
    with pytest.raises(ValueError, match="'someone-else/7', which this version does not read"):
        read_checkpoint(other)
    assert train.main(["--resume", str(newer)]) == 1


def _zip_bomb(path: Path) -> int:
    """A real torch checkpoint of 16 MB of zeros whose records are deflated (torch reads them): ~20 kB."""
    plain = path.with_suffix(".plain")
    torch.save({"model": {"w": torch.zeros(4 * 2 ** 20)}}, plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            with src.open(info) as f, dst.open(info.filename, "w") as out:
                shutil.copyfileobj(f, out, 2 ** 20)
    plain.unlink()
    return path.stat().st_size


def test_a_zip_bomb_is_refused_before_torch_inflates_it(tmp_path, monkeypatch, capsys):
    bomb = tmp_path / "bomb.pth"
    assert _zip_bomb(bomb) < 200_000
    inflated = []
    real_load = torch.load
    monkeypatch.setattr(checkpoint.torch, "load", lambda *a, **k: inflated.append(1) or real_load(*a, **k))
    with pytest.raises(ValueError, match=r"bomb\.pth: its zip records would inflate to \d+ bytes .*zip bomb"):
        read_checkpoint(bomb)
    assert not inflated
    assert train.main(["--resume", str(bomb)]) == 1
    assert "zip bomb" in capsys.readouterr().err


def _onnx_file(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_an_onnx_graph_given_to_get_map_says_how_to_score_it(tmp_path, capsys):
    voc = write_tiny_voc(tmp_path / "VOCtiny", 2)
    graph = _onnx_file(tmp_path / "model.onnx")
    args = ["--weights", str(graph), "--data", str(voc), "--classes", str(voc / "classes.txt"), "--no-plots",
            "--out", str(tmp_path / "out")]
    assert get_map.main(args) == 1  # read as a graph: one this project did not export
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Export it again" in err and "asks to run" not in err
    renamed = graph.rename(tmp_path / "model.bin")  # told by its first bytes too
    args[1] = str(renamed)
    assert get_map.main(args) == 1
    err = capsys.readouterr().err
    assert "model.bin: an ONNX graph, not a PyTorch checkpoint" in err and "asks to run" not in err
    assert f"get_map.py --weights {tmp_path / 'model.onnx'} (the file renamed) --data DATA" in err
    with pytest.raises(ValueError, match="model.bin: an ONNX graph"):
        read_checkpoint(renamed)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"notes.pth: not a PyTorch checkpoint: it starts with b'hello'"):
        read_checkpoint(text)


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _same(u, v, where: str = "") -> None:
    """u and v hold the same values of the same types, arrays of the same dtype, all the way down."""
    assert type(u) is type(v), f"{where}: {type(u).__name__} vs {type(v).__name__}"
    if isinstance(u, np.ndarray):
        assert u.dtype == v.dtype and u.shape == v.shape and np.array_equal(u, v, equal_nan=u.dtype.kind == "f"), where
    elif dataclasses.is_dataclass(u):
        for f in dataclasses.fields(u):
            _same(getattr(u, f.name), getattr(v, f.name), f"{where}.{f.name}")
    elif isinstance(u, (list, tuple)):
        assert len(u) == len(v), where
        for i, (a, b) in enumerate(zip(u, v)):
            _same(a, b, f"{where}[{i}]")
    elif isinstance(u, dict):
        assert list(u) == list(v), where
        for k in u:
            _same(u[k], v[k], f"{where}[{k!r}]")
    else:
        assert u == v, where


def _same_samples(a, b) -> None:
    _same(list(a), list(b), "samples")


@pytest.mark.parametrize("data_format", ("voc", "coco"))
def test_a_cached_scan_equals_a_fresh_scan_field_by_field(data_format, tmp_path, capsys):
    data = write_tiny_voc(tmp_path / "VOCtiny", 3)
    classes = read_classes(data / "classes.txt")
    if data_format == "coco":
        convert(data, tmp_path / "coco", "voc", "coco")
        data = tmp_path / "coco" / "annotations" / "instances_train.json"
    split = "train" if data_format == "voc" else "all"
    fresh = voc.load_samples(data, split, classes, use_cache=False, workers=1)
    voc.load_samples(data, split, classes, workers=1)
    stats = voc.ScanStats()
    cached = voc.load_samples(data, split, classes, workers=1, stats=stats)
    assert stats.from_cache == 3 and "scan cache" not in capsys.readouterr().err
    _same_samples(cached, fresh)
    assert not list((tmp_path / "scan_cache").glob("*.pkl")) and list((tmp_path / "scan_cache").glob("*.json"))


def test_the_cache_carries_a_new_plain_field_and_drops_a_file_of_other_fields(monkeypatch):
    extended = dataclasses.make_dataclass("Sample", [("extra", object, None)], bases=(Sample,))
    monkeypatch.setitem(scan_cache.RECORD_TYPES, "Sample", extended)
    sample = extended("a.jpg", np.zeros((1, 4), np.float32), np.array([1]), np.array([False]), 4, 3,
                      extra=[{"id": 7, "bbox": [1.5, 2, 3, 4], "area": np.float64(2.25)}, (np.arange(3), "x")])
    record = Record(sample=sample, image_path="a.jpg", unknown=Counter({"dog": 2}), warnings=["w"])
    text = scan_cache.dumps(1, {"k": ((("a", 1), (2, 3)), record)})
    (fingerprint, back), = scan_cache.loads(text, 1).values()
    assert fingerprint == (("a", 1), (2, 3)) and back.unknown == Counter({"dog": 2}) and back.warnings == ["w"]
    _same_samples([back.sample], [sample])
    assert back.sample.extra[0] == {"id": 7, "bbox": [1.5, 2, 3, 4], "area": 2.25}
    assert np.array_equal(back.sample.extra[1][0], np.arange(3))
    monkeypatch.setitem(scan_cache.RECORD_TYPES, "Sample", Sample)  # this version lacks the field: stale
    with pytest.raises(scan_cache.StaleCache, match="fields"):
        scan_cache.loads(text, 1)


def test_a_planted_pickle_in_the_scan_cache_runs_nothing(tmp_path, capsys):
    data = write_tiny_voc(tmp_path / "VOCtiny", 2)
    classes = read_classes(data / "classes.txt")
    marker = tmp_path / "code_ran"
    cache_file = voc._cache_path(data, "train", classes, 0, 0.1, None, None, None)
    cache_file.parent.mkdir(parents=True)
    cache_file.write_bytes(pickle.dumps({"x": RunsCode(marker)}))
    samples = voc.load_samples(data, "train", classes, workers=1)
    assert not marker.exists() and len(samples) == 2
    assert "unusable scan cache, scanning again" in capsys.readouterr().err
    for junk in (b"\xff\xfe", b"[" * 100_000, b'{"version": 5, "entries": {"k": {"R": ["os.system", {}]}}}'):
        cache_file.write_bytes(junk)
        assert len(voc.load_samples(data, "train", classes, workers=1)) == 2  # rescanned, never an error


def _coco_with(tmp_path: Path, file_name: str) -> Path:
    """coco/annotations/instances_val.json with one image entry named `file_name` and one box."""
    json_path = tmp_path / "coco" / "annotations" / "instances_val.json"
    json_path.parent.mkdir(parents=True)
    json_path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": file_name, "width": 128, "height": 128}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600,
                         "iscrowd": 0}],
        "categories": [{"id": 1, "name": "red"}]}))
    return json_path


@pytest.mark.parametrize("escape", ("../secret/img00.png", "absolute"))
def test_a_coco_file_name_outside_the_dataset_is_refused_unless_images_holds_it(escape, tmp_path, capsys):
    tiny = write_tiny_voc(tmp_path / "VOCtiny", 1)
    secret = tmp_path / "coco" / "secret"
    secret.mkdir(parents=True)
    shutil.copy(tiny / "JPEGImages" / "img00.png", secret / "img00.png")
    name = escape if escape != "absolute" else str(secret / "img00.png")
    json_path = _coco_with(tmp_path, name)
    with pytest.raises(DatasetError, match=f"{json_path}: image entry file_name '{name}' leads outside"):
        voc.load_samples(json_path, "all", ["red"], use_cache=False, workers=1)
    classes = tmp_path / "classes.txt"
    classes.write_text("red\n")
    dst = tmp_path / "out"
    assert convert_main(["--from", "coco", "--to", "yolo", str(json_path), str(dst), "--classes", str(classes)]) == 1
    err = capsys.readouterr().err
    assert f"file_name '{name}' leads outside" in err and len(err.strip().splitlines()) == 1
    assert not dst.exists()
    # --images naming the folder that holds it: read from there
    convert(json_path, dst, "coco", "yolo", classes, images_dir=secret)
    assert [p.name for p in (dst / "images").rglob("*.png")] == ["img00.png"]


def test_a_labelme_image_path_outside_the_folder_is_refused(tmp_path):
    tiny = write_tiny_voc(tmp_path / "VOCtiny", 1)
    (tmp_path / "outside").mkdir()
    shutil.copy(tiny / "JPEGImages" / "img00.png", tmp_path / "outside" / "x.png")
    folder = tmp_path / "labelme"
    folder.mkdir()
    shape = {"label": "red", "points": [[10, 10], [50, 50]], "shape_type": "rectangle"}
    for path in ("../outside/x.png", str(tmp_path / "outside" / "x.png")):
        (folder / "a.json").write_text(json.dumps({"imagePath": path, "shapes": [shape]}))
        with pytest.raises(DatasetError, match=f"a.json: imagePath '{path}' leads outside the labelme folder"):
            voc.load_samples(folder, "all", ["red"], use_cache=False, workers=1)
    shutil.copy(tiny / "JPEGImages" / "img00.png", folder / "x.png")  # the image of that name beside the JSON
    samples = voc.load_samples(folder, "all", ["red"], use_cache=False, workers=1)
    assert [Path(s.image_path) for s in samples] == [folder / "x.png"]
