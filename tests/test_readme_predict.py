"""The README's "Inference" section runs as written: each `python predict.py` line (with and without its
[optional] part) and the Python block, at tiny size, in a folder holding the files the commands name."""
import re
import shutil

import cv2
import pytest
import torch
from PIL import Image

import predict
from nets.darknet import save_darknet_weights
from tests.conftest import ANCHORS_MASK, ROOT
from tests.reference_model import ReferenceYoloBody, randomize
from tests.helpers.voc import write_scene_voc
from tests.helpers.readme import section_blocks
from tests.helpers.models import make_checkpoint, random_model, rgb


def inference_blocks():
    """(bash lines, python text) of the README's Inference section."""
    bash, python = section_blocks("Inference")
    return [line.split("#")[0].strip() for line in bash.splitlines() if line.strip()], python


def variants(line: str):
    """The command without its [optional] parts, and with them (brackets dropped)."""
    bare = re.sub(r"\[[^\]]*\]", "", line).split()
    full = line.replace("[", "").replace("]", "").split()
    return [bare] if bare == full else [bare, full]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The working directory of the commands: a trained run under logs/, the images, folder, video, darknet
    and reference files they name, model_data/ and a VOC dataset; predict.py's out/ goes here too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(predict, "ROOT", tmp_path)  # out/predict/expN here, not in the repository
    monkeypatch.setenv("YOLO_SCAN_CACHE", str(tmp_path / "cache"))
    make_checkpoint(tmp_path / "logs" / "exp" / "best.pth")
    for name, seed in (("street.jpg", 0), ("a.jpg", 1)):
        Image.fromarray(rgb(60, 80, seed=seed)).save(tmp_path / name)
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        Image.fromarray(rgb(40, 50, seed=i)).save(tmp_path / "imgs" / f"{i}.jpg")
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    for i in range(2):
        writer.write(rgb(64, 96, seed=i))
    writer.release()
    save_darknet_weights(random_model(80), tmp_path / "yolov4-tiny.weights")
    torch.save(randomize(ReferenceYoloBody(ANCHORS_MASK, 20, phi=1)).state_dict(), tmp_path / "ref.pth")
    shutil.copytree(ROOT / "model_data", tmp_path / "model_data")
    write_scene_voc(tmp_path / "VOCdevkit" / "VOC2007")
    return tmp_path


def test_readme_inference_commands_run(workdir, capsys):
    lines, python = inference_blocks()
    commands = [argv for line in lines for argv in variants(line)]
    assert len(commands) >= 10 and all(c[:2] == ["python", "predict.py"] for c in commands)
    for argv in commands:
        assert predict.main(argv[2:]) == 0, (argv, capsys.readouterr().err)
    assert not (workdir / "m.onnx").exists() and (workdir / "logs" / "exp" / "m.onnx").is_file()  # beside the weights
    assert (workdir / "out" / "predict" / "exp1" / "street.jpg").is_file()
    exec(compile(python, "README.md", "exec"), {})
    assert (workdir / "out.jpg").is_file() and (workdir / "out" / "api" / "labels" / "0.txt").is_file()
    assert (workdir / "logs" / "exp" / "best.onnx").is_file() and (workdir / "logs" / "exp" / "best_int8.onnx").is_file()
