"""The README's other commands run as written (Inference and Evaluation: tests/test_readme_predict.py and
tests/test_readme_get_map.py). Every ```bash and ```python block outside those two sections, and every inline
`python ...` command, is read from README.md: each command line runs through its script's main(argv) in a folder
holding the files it names, with tiny-size flags appended (TINY); the few that cannot run here (not_run: more
processes, a benchmark of minutes, many trainings) have their flags parsed by the script's own parser."""
import argparse
import dataclasses
import importlib.util
import re
import shlex
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import ablate
import get_map
import predict
import train
from nets.darknet import save_darknet_weights
from nets.yolo import YoloBody
from tests.conftest import ANCHORS_MASK, ROOT
from tests.helpers.voc import encoded, rectangle, voc_objects, write_labelme, write_voc
from utils.data import demo_data
from utils.data import convert
from utils.eval import ablation_runs, scoring
from yolo import YOLO

COVERED_ELSEWHERE = ("## Inference", "## Evaluation")
QUICK_START = "### Quick start on a CPU"
EXEMPT = (["pip", "install"], ["python", "-m", "pytest"])
TRAIN_TINY = ["--epochs", "1", "--input-size", "64", "--batch-size", "4", "--workers", "0", "--eval-period", "0",
              "--amp", "off", "--quiet"]
TINY = {  # flags appended to each command of a script (a later flag overrides the README's value)
    "train.py": TRAIN_TINY,
    "get_map.py": ["--no-plots"],
    "predict.py": ["--conf", "0.001"],  # a model trained one tiny epoch: detections to draw CAMs of
    "ablate.py": [f for f in TRAIN_TINY if f not in ("--amp", "off")] + [  # ablate.py takes no --amp
        "--seeds", "1", "--bench-size", "64", "--latency-runs", "1", "--latency-warmup", "0",
                               "--bootstrap", "10", "--device", "cpu"],
    "utils.data.convert": [],
    "utils.data.demo_data": [],
    "utils.data.anchors": [],
    "utils.deploy.quantize": ["--calib-images", "2", "--batch-size", "2"],
    "nets.summary": ["--input-size", "64"],
}
API_TINY = {"epochs": 1, "input_size": 64, "batch_size": 4, "workers": 0, "eval_period": 1, "amp": "off", "quiet": True}
RESUME_TINY = ["--epochs", "2", "--workers", "0", "--quiet"]  # a resume refuses flags that change the run
MAX_ABLATION_RUNS = 3
# The README ran these on the demo run's checkpoint with no VOCdevkit/ (the demo's classes): run so here too.
ON_THE_DEMO = ("python get_map.py --weights logs/exp/best.pth",
               "python -m utils.deploy.quantize --weights logs/exp/best.pth")


def not_run(script: str, argv: list):
    """Why a command is only parsed, not run (None: it runs)."""
    if script == "torchrun":
        return ("starts 2 processes (DistributedDataParallel); tests/test_train.py::"
                "test_torchrun_shards_are_disjoint_and_match_one_process runs torchrun with 2 gloo ranks")
    if script == "bench/bench_vs_peer.py":
        return "installs ultralytics into bench/.venv-peer and trains 4 models x 2 datasets for 25 epochs"
    if script.startswith("bench/"):
        return "a timing benchmark of minutes; the README's tables are its output"
    if script == "utils.deploy.quantize" and not argv:
        return "its name in the list of module commands (What works today); run with --weights below"
    if script == "ablate.py":
        n = ablation_size(argv)
        if n > MAX_ABLATION_RUNS:
            return f"trains {n} runs (variants x seeds); tests/test_ablate.py runs a tiny ablation"
    return None


def check_parses(script: str, flags: list) -> None:
    """The script's parser takes the flags (argparse exits with 2 on a flag it does not take)."""
    if flags or script != "utils.deploy.quantize":  # the bare name is a mention; --weights is required
        parser_of(script).parse_args(flags)


def ablation_size(argv: list) -> int:
    args = ablate.make_parser().parse_args(argv)
    return len(ablate.variants_from_args(args)) * args.seeds


def readme_text() -> str:
    """README.md without the sections other tests run."""
    text = (ROOT / "README.md").read_text()
    parts = re.split(r"\n(?=## )", text)
    return "\n".join(p for p in parts if not p.startswith(COVERED_ELSEWHERE))


def fenced_blocks(text: str):
    """[(language, body)] of the fenced blocks with a language (bash or python)."""
    return re.findall(r"^```(bash|python)\n(.*?)^```", text, flags=re.M | re.S)


def shell_commands(body: str):
    """The argv lists of a bash block: continuation lines joined, comments dropped, `nice -n N` removed."""
    commands = []
    for line in body.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if argv[:1] == ["nice"]:
            argv = argv[3:]
        if argv:
            commands.append(argv)
    return commands


def inline_commands(text: str):
    """The argv lists of inline `python ...` spans outside fenced blocks."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return [shlex.split(span) for span in re.findall(r"`(python [^`]+)`", prose)]


def script_of(argv: list):
    """(script key, its flags) of a command: train.py, bench/x.py, utils.data.convert (-m), torchrun, cp."""
    if argv[0] == "python" and argv[1] == "-m":
        return argv[2], argv[3:]
    if argv[0] == "python":
        return argv[1], argv[2:]
    if argv[0] == "torchrun":
        script = next(i for i, a in enumerate(argv) if a.endswith(".py"))
        return "torchrun", argv[script + 1:]
    return argv[0], argv[1:]


def parser_of(script: str) -> argparse.ArgumentParser:
    if script in ("torchrun", "train.py"):
        return train.make_parser()
    if script.endswith(".py"):
        path = ROOT / script
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.make_parser()
    return importlib.import_module(script).make_parser()


def main_of(script: str):
    return {"train.py": train.main, "get_map.py": get_map.main, "ablate.py": ablate.main,
            "predict.py": predict.main}.get(script) or importlib.import_module(script).main


def write_voc_year(year: Path, n: int = 4, splits=("train", "val", "trainval", "test")) -> Path:
    """A VOC year folder of n 96x96 images holding a cat and a dog (VOC class names), every split all images."""
    items = {}
    for i in range(n):
        image = np.full((96, 96, 3), 110 + 10 * i, np.uint8)
        boxes = [("cat", 8, 10, 44 + i, 60, False), ("dog", 50, 30, 90, 88 - i, False)]
        for k, (_, x1, y1, x2, y2, _) in enumerate(boxes):
            cv2.rectangle(image, (x1, y1), (x2, y2), (40, 200, 40) if k else (200, 40, 40), -1)
        items[f"{i:06d}"] = (encoded(image, ".jpg"), f"{i:06d}.jpg", (96, 96), boxes)
    return write_voc(year, items, splits={split: list(items) for split in splits})


def write_labelme_folder(folder: Path, year: Path) -> None:
    """The VOC year's images as a labelme folder (one JSON of rectangles per image) with classes.txt."""
    folder.mkdir()
    for stem, (filename, size, objects) in voc_objects(year).items():
        shutil.copy(year / "JPEGImages" / filename, folder / filename)
        write_labelme(folder / f"{stem}.json", filename, [rectangle(n, a, b, c, d) for n, a, b, c, d, _ in objects],
                      size)
    (folder / "classes.txt").write_text("cat\ndog\n")


def write_datasets(root: Path) -> None:
    """Every dataset the README's commands name, from one tiny VOC year."""
    year = write_voc_year(root / "VOCdevkit" / "VOC2007")
    (root / "my_classes.txt").write_text("cat\ndog\n")
    assert convert.main(["--from", "voc", "--to", "yolo", str(year), str(root / "datasets" / "mine"),
                         "--splits", "train", "val"]) == 0
    source = write_voc_year(root / "src2017", splits=("train2017",))
    assert convert.main(["--from", "voc", "--to", "coco", str(source), str(root / "coco"), "--classes",
                         str(root / "my_classes.txt")]) == 0
    shutil.copy(root / "coco" / "annotations" / "instances_train2017.json", root / "instances_val.json")
    shutil.copytree(root / "coco" / "train2017", root / "imgs")
    write_labelme_folder(root / "labelme_folder", year)
    save_darknet_weights(YoloBody(ANCHORS_MASK, 80), root / "yolov4-tiny.weights")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The repository's working directory as the commands expect it, in tmp_path: model_data/, a VOCdevkit, the
    other datasets and files they name, a tiny demo dataset (4 train / 4 val) under demo_data/ when asked for."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("YOLO_SCAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(scoring, "RESULTS_BASE", tmp_path / "map_out")
    monkeypatch.setattr(predict, "ROOT", tmp_path)
    monkeypatch.setitem(demo_data.STYLES, "demo", dataclasses.replace(demo_data.STYLES["demo"], n_train=4, n_val=4))
    make = demo_data.ensure_demo_dataset
    monkeypatch.setattr(demo_data, "ensure_demo_dataset", lambda root=None, style="demo", data_format="voc": make(
        root if root is not None else tmp_path / "demo_data", style, data_format))
    monkeypatch.setattr(ablation_runs, "run_logged", lambda cmd, log, echo: train.main(cmd[2:]))  # in-process
    train_api = YOLO.train
    monkeypatch.setattr(YOLO, "train", staticmethod(lambda data=None, **kw: train_api(data, **{**kw, **API_TINY})))
    shutil.copytree(ROOT / "model_data", tmp_path / "model_data")
    return tmp_path


def quick_start_commands(text: str):
    """The argv lists of the Quick start's bash block (Set-up's subsection)."""
    section = text[text.index(QUICK_START):].split("\n## ")[0]
    return [argv for lang, body in fenced_blocks(section) if lang == "bash" for argv in shell_commands(body)]


def readme_commands(text: str):
    """(bash argv lists, python blocks) of the README outside the sections other tests run, inline commands last."""
    blocks = fenced_blocks(text)
    shell = [argv for lang, body in blocks if lang == "bash" for argv in shell_commands(body)]
    shell += inline_commands(text)
    unique = []
    for argv in shell:
        if argv not in unique and not any(argv[:len(e)] == e for e in EXEMPT):
            unique.append(argv)
    return unique, [body for lang, body in blocks if lang == "python"]


def test_every_command_is_found_and_those_not_run_parse_with_a_reason():
    commands, python = readme_commands(readme_text())
    scripts = {script_of(argv)[0] for argv in commands}
    assert {"train.py", "torchrun", "get_map.py", "ablate.py", "utils.data.convert", "utils.data.demo_data",
            "utils.deploy.quantize", "utils.data.anchors", "nets.summary", "cp"} <= scripts, scripts
    assert len(commands) >= 30 and len(python) >= 2
    skipped = []
    for argv in commands:
        script, flags = script_of(argv)
        reason = not_run(script, flags)
        if reason:
            check_parses(script, flags)
            skipped.append((shlex.join(argv), reason))
    assert len(skipped) >= 8, skipped


def run_command(argv: list, workdir: Path, capsys) -> None:
    script, flags = script_of(argv)
    if script == "cp":  # the docs/ pictures: the file the commands before made, and the folder it goes to
        assert (workdir / flags[0]).is_file() and (ROOT / flags[1]).parent.is_dir(), argv
        return
    if not_run(script, flags):
        check_parses(script, flags)
        return
    if "--help" in flags:
        with pytest.raises(SystemExit) as stop:
            parser_of(script).parse_args(flags)
        assert stop.value.code == 0
        return
    tiny = RESUME_TINY if "--resume" in flags else TINY[script]
    if "--freeze-epochs" in flags:  # frozen for the one epoch there is
        tiny = tiny + ["--freeze-epochs", "1"]
    hide = shlex.join(argv) in ON_THE_DEMO and (workdir / "VOCdevkit").is_dir()
    if hide:
        (workdir / "VOCdevkit").rename(workdir / "VOCdevkit.aside")
    try:
        code = main_of(script)(flags + tiny)
    finally:
        if hide:
            (workdir / "VOCdevkit.aside").rename(workdir / "VOCdevkit")
    assert code == 0, (shlex.join(argv), capsys.readouterr().err[-2000:])


@pytest.mark.slow
def test_readme_commands_run_at_tiny_size(workdir, capsys):
    """In README order; the Set-up command first, with no dataset in VOCdevkit/ (so it makes the demo dataset),
    then the datasets the other commands name are written."""
    text = readme_text().replace("/tmp/camdemo", str(workdir / "camdemo"))
    commands, python = readme_commands(text)
    setup = shell_commands(fenced_blocks(text)[0][1])
    assert [argv for argv in setup if argv in commands] == [["python", "train.py", "--phi", "2"]]
    run_command(setup[-1], workdir, capsys)
    assert (workdir / "demo_data" / "demo" / "JPEGImages").is_dir()
    assert (workdir / "logs" / "exp" / "best.pth").is_file()
    quick = quick_start_commands(text)  # then the Quick start, on the demo dataset as a newcomer runs it
    assert [script_of(argv)[0] for argv in quick] == ["train.py", "predict.py", "get_map.py"]
    for argv in quick:
        run_command(argv, workdir, capsys)
    assert (workdir / "logs" / "exp2" / "best.pth").is_file() and (workdir / quick[1][-1]).is_file()
    assert any((workdir / "out" / "predict").glob(f"exp*/{Path(quick[1][-1]).name}"))
    write_datasets(workdir)
    for argv in commands[1:]:
        if argv not in quick:
            run_command(argv, workdir, capsys)
    assert (workdir / "datasets" / "voc07-yolo" / "data.yaml").is_file()
    assert (workdir / "demo_data" / "demo-yolo").is_dir() and any(workdir.glob("**/*int8*.onnx"))
    assert (workdir / "camdemo" / "pred" / "val_00003_heatmap.jpg").is_file()
    ran = set()
    for body in python:  # the Model block (its `images` given) and YOLO.train's (at API_TINY), any new one as well
        scope = {"images": torch.rand(1, 3, 64, 64)}
        exec(compile(body, "README.md (a Python block)", "exec"), scope)
        if "out0" in scope:
            assert scope["out0"].shape[-2:] == (2, 2) and scope["out1"].shape[-2:] == (4, 4)
            ran.add("model")
        if "run" in scope:
            assert scope["run"].metrics["epoch"] == 1 and (scope["run"].run_dir / "last.pth").is_file()
            ran.add("train")
    assert ran == {"model", "train"}
