"""A newcomer's first hour (issue 33): --help without torch, other projects' flag names, help texts that read the
right way round, flag errors before the dataset scan, warnings for a run inside its warmup and for bf16 without
native bf16, --threads, the time left on each epoch's line, 'resuming at epoch N of M', predict's --conf."""
import argparse
import inspect
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import ablate
import get_map
import predict
import train
from tests.conftest import ROOT
from utils.core.amp import resolve_amp, set_threads
from utils.core.settings import SETTINGS
from utils.engine import run as engine_run
from utils.engine.eta import RunClock, evaluated_epochs
from utils.engine.resume import RUNTIME_FLAGS
from utils.eval import scoring
from yolo import YOLO

SCRIPTS = ("train.py", "predict.py", "get_map.py", "ablate.py")
IMPORTS_AFTER_HELP = """
import runpy, sys
sys.argv = [{script!r}, "--help"]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as stop:
    assert stop.code in (None, 0), stop.code
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "cv2")))
"""


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_imports_no_torch(script):
    out = subprocess.run([sys.executable, "-c", IMPORTS_AFTER_HELP.format(script=script)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout and out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:]


def flag_help(parser: argparse.ArgumentParser, option: str) -> str:
    (action,) = [a for a in parser._actions if option in a.option_strings]
    return action.help


def test_help_texts_read_the_right_way_round():
    parser = train.make_parser()
    for option, name in (("--no-ema", "ema"), ("--no-val-loss", "val_loss")):
        text = flag_help(parser, option)
        assert "(default: on)" not in text and f"not given, so {name} is true" in text, text
    size = flag_help(parser, "--input-size").split("(default: ")[1]
    for tool in SCRIPTS:  # one default per tool: each named once before its value ("get_map.py, predict.py and
        # utils.deploy.quantize: the checkpoint's")
        assert len(re.findall(rf"{re.escape(tool)}(?::|,| and)", size)) == 1, (tool, size)
    assert "416, or the checkpoint's" not in size
    anchors = flag_help(parser, "--anchors")
    assert str(ROOT) not in anchors and "model_data/yolo_anchors.txt" in anchors


def test_ultralytics_flag_names_work():
    assert train.parse_args(["--imgsz", "160"]).input_size == 160
    assert predict.make_parser().parse_args(["--imgsz", "384,640"]).input_size == (384, 640)
    assert "--imgsz (the name ultralytics uses) works too" in flag_help(train.make_parser(), "--input-size")


def test_source_runs_as_the_flag_it_stands_for(tmp_path):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"")
    parser = predict.make_parser()
    cases = [(str(tmp_path), "dir"), ("0", "video"), ("clip.MP4", "video"), ("rtsp://host/stream", "video"),
             (str(image), "img"), ("clip.3gp", "video"), ("HTTP://host/a.jpg", "video")]  # YOLO.predict's rule
    for source, dest in cases:
        args = parser.parse_args(["--source", source])
        predict.check_args(args)
        assert getattr(args, dest) == source, (source, vars(args))
    with pytest.raises(SystemExit):  # one source: --source and --img exclude each other
        parser.parse_args(["--source", "x.jpg", "--img", "y.jpg"])


def no_scan(*args, **kwargs):
    pytest.fail("the dataset was scanned before the flags were checked")


@pytest.mark.parametrize("flags,said", [(["--phi", "5"], "unknown phi 5"),
                                        (["--attention", "foo"], "unknown attention 'foo'"),
                                        (["--input-size", "150"], "multiple of 32")])
def test_flag_errors_come_before_the_dataset_scan(flags, said, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(engine_run, "load_data", no_scan)
    monkeypatch.setattr(scoring, "score", no_scan)
    assert train.main(flags + ["--epochs", "1", "--save-dir", str(tmp_path / "logs")]) == 1
    assert said in capsys.readouterr().err
    assert get_map.main(flags) == 1
    assert said in capsys.readouterr().err


def test_a_run_inside_its_warmup_warns_and_a_resume_says_where_it_goes_on(capsys):
    with pytest.warns(UserWarning, match="ends inside the 3-epoch learning-rate warmup"):
        engine_run.announce(SimpleNamespace(epochs=3, warmup_epochs=3.0), None, None)
    engine_run.announce(SimpleNamespace(epochs=5, warmup_epochs=3.0), {"epoch": 1}, "logs/exp/last.pth")
    assert "resuming at epoch 3 of 5 from logs/exp/last.pth" in capsys.readouterr().out
    assert "threads" in RUNTIME_FLAGS  # --threads may be given with --resume


def test_bf16_on_a_cpu_without_native_bf16_warns(recwarn):
    with pytest.warns(UserWarning, match="without native bf16"):
        assert resolve_amp("bf16", torch.device("cpu"), cpu_bf16=False) is torch.bfloat16
    resolve_amp("bf16", torch.device("cpu"), cpu_bf16=True)
    resolve_amp("auto", torch.device("cpu"), cpu_bf16=False)
    assert not [w for w in recwarn if "bf16" in str(w.message)]


def test_threads_is_one_setting_of_the_four_scripts_and_sets_torch():
    assert set(SETTINGS["threads"].tools) == {"train", "predict", "get_map", "ablate"}
    for parser in (train.make_parser(), predict.make_parser(), get_map.make_parser(), ablate.make_parser()):
        assert parser.parse_args(["--threads", "1"]).threads == 1 and parser.parse_args([]).threads == 0
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        set_threads(0)  # PyTorch's choice: left as it is
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_each_epoch_line_ends_with_the_time_left():
    now = [0.0]
    clock = RunClock(epochs=10, eval_period=5, clock=lambda: now[0])
    clock.start_epoch()
    now[0] = 30.0
    first = clock.end_epoch(1)
    assert first.startswith("; eta 4.5 min + 2 mAP evaluations") and "9 epochs left at 30s each" in first
    for epoch in range(2, 6):
        clock.start_epoch()
        now[0] += 30.0
        if epoch == 5:
            clock.evaluated(60.0)
            now[0] += 60.0
        text = clock.end_epoch(epoch)
    assert text == "; eta 3.5 min"  # 5 epochs of 30 s and 1 evaluation of 60 s left
    assert evaluated_epochs(12, 5, 0) == 3 and evaluated_epochs(12, 0, 0) == 0
    clock.start_epoch()
    assert clock.end_epoch(10) == ""  # nothing left


def test_predict_shows_boxes_from_0_25_and_get_map_scores_from_0_001():
    assert predict.make_parser().parse_args([]).conf == 0.25
    assert get_map.make_parser().parse_args([]).conf == 0.001
    assert inspect.signature(YOLO).parameters["conf"].default == 0.25
