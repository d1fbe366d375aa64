"""Issue 27, "one line, never a traceback": failures of the machine or the input files end a script with one
line on stderr that names the file (or folder) and exit code 1, not a Python traceback.

Each test runs the real script's main(argv) in-process; a full disk, a read-only folder and a full RAM are
imitated by monkeypatching the call that would hit them.
"""
import errno
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

import get_map
import predict
import train
from tests.helpers.models import CLASSES as YOLO_CLASSES, make_checkpoint, rgb
from tests.helpers.voc import TINY_CLASSES as CLASSES, perfect_results, write_map_voc, write_tiny_voc
from utils.data import convert
from utils.data.layouts import _seeded_val
from utils.deploy.export import ort_session
from utils.engine import loop
from utils.engine.checkpoint import read_checkpoint, save_atomic


pytestmark = pytest.mark.usefixtures("scan_cache")

TORCH_SHORT_WRITE = "[enforce fail at inline_container.cc:672] . unexpected pos 1088 vs 982"
CPU_OOM = ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
           "allocate 3221225472 bytes. Error code 12 (Cannot allocate memory)")
DEEP = "[" * 200_000 + "]" * 200_000  # deeper than Python's json parser can follow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_voc(tmp_path_factory.mktemp("voc") / "VOCtiny", 4)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pth")


@pytest.fixture(scope="module")
def last_pth(tiny, tmp_path_factory):
    """last.pth of a 1-epoch run on `tiny`: a checkpoint that --resume takes."""
    save_dir = tmp_path_factory.mktemp("run")
    assert train.main(train_args(tiny, save_dir, "--epochs", 2)) == 0
    return save_dir / "exp" / "last.pth"


def train_args(data: Path, save_dir: Path, *extra) -> list:
    return ["--data", str(data), "--classes", str(data / "classes.txt"), "--input-size", "64", "--batch-size", "2",
            "--workers", "0", "--save-dir", str(save_dir), "--quiet", "--epochs", "1", "--eval-period", "0",
            *map(str, extra)]


def one_line(rc: int, err: str, *named) -> str:
    """Exit code 1 and exactly one line on stderr, naming everything in `named`; returns the line."""
    lines = err.strip().splitlines()
    assert rc == 1 and "Traceback" not in err and len(lines) == 1, err[-3000:]
    for name in named:
        assert str(name) in lines[0], lines[0]
    return lines[0]


def image(path: Path, size=(48, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb(size[1], size[0])).save(path)
    return path


@pytest.mark.parametrize("failure", ["torch", "oserror"])
def test_disk_full_while_saving_a_checkpoint(tiny, tmp_path, capsys, monkeypatch, failure):
    def full_disk_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        if failure == "torch":
            raise RuntimeError(TORCH_SHORT_WRITE)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk_save)
    rc = train.main(train_args(tiny, tmp_path))
    line = one_line(rc, capsys.readouterr().err, tmp_path / "exp")
    assert "disk is full" in line and ".pth" in line
    assert not list((tmp_path / "exp").glob("*.pth")) and not list((tmp_path / "exp").glob(".*.tmp"))


def test_disk_full_while_writing_results(ckpt, tmp_path, capsys, monkeypatch):
    real_dump = json.dump

    def full_disk_dump(obj, f, *args, **kwargs):
        real_dump(obj, f, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json, "dump", full_disk_dump)
    out = tmp_path / "out"
    rc = predict.main(["--weights", str(ckpt), "--img", str(image(tmp_path / "a.jpg")), "--out", str(out),
                       "--save-json"])
    line = one_line(rc, capsys.readouterr().err, out / "detections.json")
    assert "disk is full" in line
    assert not (out / "detections.json").exists() and not list(out.glob(".*.tmp"))


def make_read_only(folder: Path, monkeypatch) -> None:
    """`folder` refuses new files and folders, as a read-only one does for a user other than root."""
    folder.mkdir(parents=True, exist_ok=True)
    real_mkdir, real_open = os.mkdir, os.open

    def inside(path) -> bool:
        return Path(os.fsdecode(path)).resolve().parent == folder.resolve()

    def mkdir(path, *args, **kwargs):
        if inside(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_mkdir(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if inside(path) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)


def test_read_only_save_dir(tiny, tmp_path, capsys, monkeypatch):
    save_dir = tmp_path / "ro"
    make_read_only(save_dir, monkeypatch)
    line = one_line(train.main(train_args(tiny, save_dir)), capsys.readouterr().err, save_dir)
    assert "permission denied" in line.lower()


def test_read_only_out(ckpt, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ro"
    make_read_only(out, monkeypatch)
    rc = predict.main(["--weights", str(ckpt), "--img", str(image(tmp_path / "a.jpg")), "--out", str(out)])
    line = one_line(rc, capsys.readouterr().err, out)
    assert "permission denied" in line.lower() and "--out" in line


@pytest.mark.parametrize("error", [RuntimeError(CPU_OOM), MemoryError()])
def test_cpu_out_of_memory_says_lower_the_batch_size(tiny, tmp_path, capsys, monkeypatch, error):
    def out_of_memory(*args, **kwargs):
        raise error

    monkeypatch.setattr(loop, "train_one_epoch", out_of_memory)
    line = one_line(train.main(train_args(tiny, tmp_path)), capsys.readouterr().err, "--batch-size")
    assert "out of memory" in line


def test_deep_coco_json(tiny, tmp_path, capsys):
    deep = tmp_path / "instances_train.json"
    deep.write_text(DEEP)
    rc = train.main(["--data", str(deep), *train_args(tiny, tmp_path)[2:]])
    assert "nested" in one_line(rc, capsys.readouterr().err, deep)


def test_deep_detections_json(tmp_path, capsys):
    voc = write_map_voc(tmp_path)
    deep = tmp_path / "detections.json"
    deep.write_text(DEEP)
    rc = get_map.main(["--detections", str(deep), "--classes", str(tmp_path / "classes.txt"), "--data", str(voc),
                       "--out", str(tmp_path / "o"), "--no-plots"])
    assert "nested" in one_line(rc, capsys.readouterr().err, deep)


def ends_in_one_error(rc: int, err: str, *named) -> str:
    """Exit code 1, no traceback, and a last line that is the error naming everything in `named` (the scan's
    warnings about the files it skipped come before it)."""
    assert rc == 1 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert ": error: " in last and all(str(name) in last for name in named), last
    return last


def labelme_folder(root: Path, class_names) -> Path:
    """A labelme folder in the seeded split (seed 0, val fraction 0.1): a file nested 200,000 deep in train
    (sorted first, so the format detection reads it too), a good file in train and one in val."""
    in_val = [f"f{i:03d}" for i in range(200) if _seeded_val(f"f{i:03d}", 0, 0.1)]
    in_train = [f"f{i:03d}" for i in range(200) if not _seeded_val(f"f{i:03d}", 0, 0.1)]
    deep, good = in_train[0], [in_train[1], in_val[0]]
    for stem in good:
        image(root / f"{stem}.png", (64, 64))
        shape = {"label": class_names[0], "points": [[8, 8], [40, 40]], "shape_type": "rectangle"}
        (root / f"{stem}.json").write_text(json.dumps({"shapes": [shape], "imagePath": f"{stem}.png",
                                                       "imageWidth": 64, "imageHeight": 64}))
    (root / f"{deep}.json").write_text(DEEP)
    (root / "classes.txt").write_text("\n".join(class_names) + "\n")
    return root / f"{deep}.json"


def test_deep_labelme_file_is_skipped_in_training(tmp_path, capsys):
    deep = labelme_folder(tmp_path / "labelme", CLASSES)
    assert train.main(train_args(deep.parent, tmp_path / "runs")) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(deep) in err and "nested" in err


def test_deep_labelme_file_stops_the_evaluation(ckpt, tmp_path, capsys):
    deep = labelme_folder(tmp_path / "labelme", YOLO_CLASSES)
    rc = get_map.main(["--weights", str(ckpt), "--data", str(deep.parent), "--split", "train", "--out",
                       str(tmp_path / "o"), "--no-plots"])
    ends_in_one_error(rc, capsys.readouterr().err, deep)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_yolo_class_not_finite_names_the_file_and_line(tmp_path, capsys, value):
    root = tmp_path / "yolo"
    image(root / "images" / "a.png", (64, 64))
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text(f"0 0.5 0.5 0.2 0.2\n{value} 0.5 0.5 0.2 0.2\n")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    rc = convert.main(["--from", "yolo", "--to", "voc", str(root), str(tmp_path / "voc"), "--splits", "train"])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err
    assert f"{root / 'labels' / 'a.txt'} line 2" in err and value in err


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert predict.main(["--weights", str(ckpt), "--export-onnx", str(path)]) == 0
    return path


def test_onnx_with_external_data(exported, tmp_path, capsys):
    import onnx
    model = onnx.load(str(exported))
    path = tmp_path / "external.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="external.onnx.data", size_threshold=0)
    (tmp_path / "external.onnx.data").unlink()
    rc = predict.main(["--weights", str(path), "--img", str(image(tmp_path / "a.jpg")), "--out", str(tmp_path / "o")])
    assert "external data" in one_line(rc, capsys.readouterr().err, path)


def test_onnx_with_a_custom_op(exported, tmp_path, capsys):
    import onnx
    model = onnx.load(str(exported))
    node = next(n for n in model.graph.node if n.op_type == "LeakyRelu")
    node.op_type, node.domain = "FancyRelu", "com.example"
    model.opset_import.add(domain="com.example", version=1)
    path = tmp_path / "custom.onnx"
    onnx.save_model(model, str(path))
    rc = predict.main(["--weights", str(path), "--img", str(image(tmp_path / "a.jpg")), "--out", str(tmp_path / "o")])
    assert "com.example.FancyRelu" in one_line(rc, capsys.readouterr().err, path)
    with pytest.raises(ValueError, match="the ONNX graph: ONNX Runtime cannot load it"):
        ort_session(b"not a graph")  # what the check does not catch ends in one line all the same


def test_resume_with_tensors_that_do_not_fit(last_pth, tiny, tmp_path, capsys):
    ckpt = read_checkpoint(last_pth)
    name = next(n for n, t in ckpt["model"].items() if t.dim() == 4)
    for key in ("model", "train_model"):
        if ckpt.get(key) is not None:
            ckpt[key] = {**ckpt[key], name: torch.zeros(1, 1, 1, 1)}
    bad = tmp_path / "exp" / "last.pth"
    bad.parent.mkdir()
    save_atomic(ckpt, bad)
    rc = train.main(["--resume", str(bad), "--workers", "0", "--quiet"])
    one_line(rc, capsys.readouterr().err, bad, name)


@pytest.fixture
def bomb_limit(monkeypatch):
    """Images over 5000 pixels count as decompression bombs (Pillow errors at twice the limit)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2500)


def test_bomb_image_is_skipped_by_predict_dir(ckpt, tmp_path, capsys, bomb_limit):
    folder = tmp_path / "imgs"
    image(folder / "a.jpg", (40, 30)), image(folder / "b.jpg", (200, 100)), image(folder / "c.jpg", (40, 30))
    out = tmp_path / "out"
    assert predict.main(["--weights", str(ckpt), "--dir", str(folder), "--out", str(out), "--save-json"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(folder / "b.jpg") in err
    assert (out / "detections.json").is_file() and (out / "c.jpg").is_file()


def test_bomb_image_is_skipped_in_training(tiny, tmp_path, capsys, monkeypatch):
    data = tmp_path / "voc"
    write_tiny_voc(data, 4)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 128 * 128)
    image(data / "JPEGImages" / "img01.png", (400, 300))
    (data / "ImageSets/Main/val.txt").write_text("img00\nimg02\nimg03\n")  # in training only
    assert train.main(train_args(data, tmp_path / "runs")) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(data / "JPEGImages" / "img01.png") in err


def test_bomb_image_stops_the_evaluation(tmp_path, capsys, monkeypatch):
    voc = write_map_voc(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 128 * 100)
    bomb = voc / "VOC2007" / "JPEGImages" / "000002.jpg"
    image(bomb, (400, 300))
    results = tmp_path / "results.json"
    results.write_text(json.dumps(perfect_results()))
    rc = get_map.main(["--detections", str(results), "--classes", str(tmp_path / "classes.txt"), "--data", str(voc),
                       "--out", str(tmp_path / "o"), "--no-plots"])
    ends_in_one_error(rc, capsys.readouterr().err, bomb)


def test_data_given_an_image(tiny, tmp_path, capsys):
    jpg = image(tmp_path / "x.jpg")
    line = one_line(train.main(["--data", str(jpg), *train_args(tiny, tmp_path)[2:]]), capsys.readouterr().err, jpg)
    assert "is an image" in line and "utf-8" not in line


def test_img_given_a_folder(ckpt, tmp_path, capsys):
    rc = predict.main(["--weights", str(ckpt), "--img", str(tmp_path), "--out", str(tmp_path / "o")])
    line = one_line(rc, capsys.readouterr().err, tmp_path)
    assert "is a folder" in line and "--dir" in line


@pytest.mark.parametrize("script", ["predict", "get_map"])
def test_weights_given_a_folder(tmp_path, capsys, script):
    folder = tmp_path / "run"
    folder.mkdir()
    if script == "predict":
        rc = predict.main(["--weights", str(folder), "--img", str(image(tmp_path / "a.jpg")), "--out", str(tmp_path / "o")])
    else:
        rc = get_map.main(["--weights", str(folder), "--data", str(write_map_voc(tmp_path)),
                           "--out", str(tmp_path / "o")])
    assert "is a folder" in one_line(rc, capsys.readouterr().err, folder)


def test_classes_file_repeating_a_name(tiny, tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("red\nblue\n\nred\n")
    rc = train.main([*train_args(tiny, tmp_path), "--classes", str(classes)])
    line = one_line(rc, capsys.readouterr().err, classes)
    assert "'red'" in line and "lines 1 and 4" in line
