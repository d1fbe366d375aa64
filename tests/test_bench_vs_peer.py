"""bench/bench_vs_peer.py: VOC -> YOLO labels and files, settings keys, --peer-model, the table and its notes,
and reuse of finished results.

Pure functions and file layout only: no training, no ultralytics, no network.
"""
import argparse
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from bench import peer_setup
from tests.conftest import ROOT
from utils.data.voc import Sample

_spec = importlib.util.spec_from_file_location("bench_vs_peer", ROOT / "bench" / "bench_vs_peer.py")
bvp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bvp)

SETTINGS = bvp.Settings(input_size=320, epochs=25, batch_size=8, workers=2, threads=2, max_images=0)


def sample(path="img.jpg", boxes=((10, 20, 50, 60),), labels=(1,), difficult=(False,), width=200, height=100,
           exif_transpose=True) -> Sample:
    return Sample(str(path), np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
                  np.asarray(difficult, bool), width, height, exif_transpose)


def test_label_lines_by_hand():
    # box 10..50 x 20..60 in 200x100: centre (30, 40) -> (0.15, 0.4); size (40, 40) -> (0.2, 0.4)
    assert peer_setup.yolo_label_lines(sample()) == ["1 0.150000 0.400000 0.200000 0.400000"]


def test_label_lines_skip_difficult_and_clip():
    s = sample(boxes=((0, 0, 100, 50), (150, 50, 250, 120)), labels=(0, 2), difficult=(True, False))
    # the second box is clipped to 150..200 x 50..100: centre (0.875, 0.75), size (0.25, 0.5)
    assert peer_setup.yolo_label_lines(s) == ["2 0.875000 0.750000 0.250000 0.500000"]


def test_label_lines_background():
    assert peer_setup.yolo_label_lines(sample(boxes=(), labels=(), difficult=())) == []


def test_data_yaml_reads_back(tmp_path):
    data = yaml.safe_load(peer_setup.yolo_data_yaml(tmp_path, ["circle", "square"]))
    assert data == {"path": str(tmp_path.resolve()), "train": "images/train", "val": "images/val",
                    "names": ["circle", "square"]}


def test_convert_layout_links_and_exif(tmp_path):
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (200, 100), (10, 20, 30)).save(plain)
    turned = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 200x100, shown rotated 90 degrees: 100x200
    Image.new("RGB", (200, 100), (200, 20, 30)).save(turned, exif=exif)
    background = sample(plain, boxes=(), labels=(), difficult=())
    splits = {"train": [sample(plain)], "val": [sample(turned, width=100, height=200), background]}
    data_yaml = peer_setup.convert_to_yolo(splits, ["a", "b"], tmp_path / "yolo")
    root = data_yaml.parent
    copied = root / "images" / "train" / "00000_plain.jpg"
    assert copied.read_bytes() == plain.read_bytes() and not os.path.samefile(copied, plain)
    assert (root / "labels" / "train" / "00000_plain.txt").read_text() == "1 0.150000 0.400000 0.200000 0.400000\n"
    with Image.open(root / "images" / "val" / "00000_turned.png") as upright:
        assert upright.size == (100, 200)
    assert (root / "labels" / "val" / "00001_plain.txt").read_text() == ""
    assert [p.name for p in peer_setup.yolo_val_images(root)] == ["00000_turned.png", "00001_plain.jpg"]


def test_parse_datasets():
    assert bvp.parse_datasets("demo, alt") == ["demo", "alt"]
    with pytest.raises(argparse.ArgumentTypeError, match="valid: demo, alt"):
        bvp.parse_datasets("demo,coco")


def test_keys_differ_by_settings():
    smoke = bvp.Settings(320, 1, 8, 2, 2, 16)
    assert bvp.run_key("demo", "ours", SETTINGS) == "demo-ours-s320-e25-b8-w2-t2"
    assert bvp.run_key("demo", "ours", smoke) == "demo-ours-s320-e1-b8-w2-t2-n16"


def test_peer_model_flag_default_and_several():
    parser = bvp.make_parser()
    assert parser.parse_args([]).peer_model == ["yolov8n.yaml"]
    args = parser.parse_args(["--peer-model", "yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml", "--threads", "2"])
    assert args.peer_model == ["yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml"]
    assert list(bvp.Bench(args).peers) == ["yolov8n", "yolo11n", "yolo26n"]


@pytest.mark.parametrize("bad", ["yolov8n.pt", "yolo11n", "ours.yaml"])
def test_peer_model_flag_refuses_non_yaml_and_ours(bad, capsys):
    with pytest.raises(SystemExit):
        bvp.make_parser().parse_args(["--peer-model", bad])
    assert "expected an ultralytics model yaml" in capsys.readouterr().err


def test_peer_model_local_file_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("nc: 2\n")
    monkeypatch.chdir(tmp_path)
    assert bvp.parse_peer_model("mine.yaml") == str(tmp_path.resolve() / "mine.yaml")
    assert bvp.parse_peer_model("yolo11n.yaml") == "yolo11n.yaml"  # not a file here: a name ultralytics ships


def test_peer_models_named_by_stem_and_unique(tmp_path):
    assert bvp.peer_models(["yolo11n.yaml", str(tmp_path / "yolo26n.yaml")]) == {
        "yolo11n": "yolo11n.yaml", "yolo26n": str(tmp_path / "yolo26n.yaml")}
    with pytest.raises(ValueError, match="both named 'yolov8n'"):
        bvp.peer_models(["yolov8n.yaml", str(tmp_path / "yolov8n.yaml")])


def test_peer_keys_keep_the_yolov8n_file_names():
    assert bvp.run_key("demo", "yolov8n", SETTINGS) == "demo-yolov8n-s320-e25-b8-w2-t2"
    assert bvp.run_key("alt", "yolo26n", SETTINGS) == "alt-yolo26n-s320-e25-b8-w2-t2"


def test_detections_from_lists():
    dets = bvp.detections_from_lists([[[1, 2, 3, 4, 0.5, 1]], []])
    assert [d.shape for d in dets] == [(1, 6), (0, 6)] and dets[0].dtype == np.float32


def peer_row(model, dataset="demo", attempts=(), nms_free=False, **extra):
    return {"dataset": dataset, "model": model, "map50": 0.6, "map50_95": 0.35, "train_wall_s": 120.0,
            "params": 3_010_000, "ultralytics": "8.4.190", "model_yaml": f"{model}.yaml", "own_map50": 0.59,
            "train_network_attempts": [], "predict_network_attempts": list(attempts),
            "detect_settings": {"nms_free_head": nms_free, "used_nms_free_head": False}, **extra}


OURS_ROW = {"dataset": "demo", "model": "ours", "map50": 0.61234, "map50_95": 0.3, "train_wall_s": 90.0,
            "params": 5_880_000}


def test_table_one_row_per_dataset_and_model():
    rows = [OURS_ROW, peer_row("yolov8n"), peer_row("yolo11n", map50=0.5, params=2_590_000),
            peer_row("yolo26n", train_wall_s=150.0, params=2_380_000)]
    lines = bvp.format_table(rows).splitlines()
    assert lines[0] == "| dataset | model | AP50 | AP50-95 | train wall time | params |"
    assert lines[2:] == ["| demo | ours | 0.612 | 0.300 | 1.5 min | 5.88 M |",
                         "| demo | yolov8n | 0.600 | 0.350 | 2.0 min | 3.01 M |",
                         "| demo | yolo11n | 0.500 | 0.350 | 2.0 min | 2.59 M |",
                         "| demo | yolo26n | 0.600 | 0.350 | 2.5 min | 2.38 M |"]


def test_notes_name_every_peer_its_head_and_attempts():
    rows = [OURS_ROW, peer_row("yolov8n"), peer_row("yolo11n", attempts=["lookup github.com"]),
            peer_row("yolo26n", nms_free=True), peer_row("yolo26n", dataset="alt", nms_free=True)]
    notes = bvp.table_notes(SETTINGS, rows)
    assert "; peers: yolov8n.yaml, yolo11n.yaml, yolo26n.yaml (random weights, ultralytics 8.4.190" in notes
    assert "network attempts refused: ['demo yolo11n: lookup github.com']" in notes
    assert notes.count("yolo26n scored from its one-to-many head with the NMS above") == 1
    assert "yolov8n scored" not in notes and "yolo11n scored" not in notes
    assert "(their NMS IoU 0.7): demo yolov8n 0.590, demo yolo11n 0.590, demo yolo26n 0.590, alt yolo26n 0.590" in notes


def test_notes_without_attempts_old_rows_and_without_peers():
    old = peer_row("yolov8n")
    del old["model_yaml"], old["detect_settings"]  # a result written before --peer-model
    notes = bvp.table_notes(SETTINGS, [OURS_ROW, old])
    assert "peers: yolov8n.yaml (" in notes and "; no network access attempted" in notes
    ours_only = bvp.table_notes(SETTINGS, [OURS_ROW])
    assert ours_only.endswith("max 300 boxes") and "peer" not in ours_only and "network" not in ours_only


def _bench(tmp_path, *flags) -> "bvp.Bench":
    args = bvp.make_parser().parse_args(["--out", str(tmp_path), "--threads", "2", *flags])
    return bvp.Bench(args)


def test_each_peer_trains_from_its_own_yaml(tmp_path, monkeypatch):
    bench = _bench(tmp_path, "--peer-model", "yolov8n.yaml", "yolo26n.yaml")
    dataset = bvp.Dataset("demo", tmp_path, tmp_path / "classes.txt", ["a"])
    converted, trained = [], []
    monkeypatch.setattr(bvp, "load_split", lambda *a: [])
    monkeypatch.setattr(bvp, "convert_to_yolo", lambda *a: converted.append(a) or tmp_path / "data.yaml")
    monkeypatch.setattr(bench, "peer_python", lambda: tmp_path / "python")
    monkeypatch.setattr(bvp, "train_peer", lambda python, yaml, *a: trained.append(yaml) or {"weights": "w.pt"})
    for model in ("yolov8n", "yolo26n"):
        bench.train(dataset, model, bvp.run_key("demo", model, bench.settings))
    assert trained == ["yolov8n.yaml", "yolo26n.yaml"] and len(converted) == 1  # one conversion for both peers


@pytest.mark.parametrize("flags, models", [((), ["ours", "yolov8n"]),
                                           (("--peer-model", "yolo11n.yaml", "yolo26n.yaml"),
                                            ["ours", "yolo11n", "yolo26n"]),
                                           (("--skip-ours", "--peer-model", "yolo11n.yaml", "yolo26n.yaml"),
                                            ["yolo11n", "yolo26n"]),
                                           (("--skip-peer", "--peer-model", "yolo11n.yaml"), ["ours"])])
def test_main_runs_ours_then_every_peer(tmp_path, monkeypatch, flags, models):
    ran = []
    monkeypatch.setattr(bvp, "prepare_dataset", lambda name, *a: bvp.Dataset(name, tmp_path, tmp_path, ["a"]))
    monkeypatch.setattr(bvp.Bench, "run", lambda self, d, m: ran.append((d.name, m)) or {**OURS_ROW, "model": m})
    threads = str(torch.get_num_threads())  # main sets torch's thread count: keep this process's
    bvp.main(bvp.make_parser().parse_args(["--out", str(tmp_path), "--threads", threads, "--datasets", "demo,alt",
                                           *flags]))
    assert ran == [("demo", m) for m in models] + [("alt", m) for m in models]
    table = (tmp_path / "bench_vs_peer.md").read_text()
    assert [line.split(" | ")[1] for line in table.splitlines()[2:2 + len(ran)]] == [m for _, m in ran]


def test_finished_result_is_reused(tmp_path, monkeypatch):
    bench = _bench(tmp_path)
    dataset = bvp.Dataset("demo", tmp_path, tmp_path / "classes.txt", ["a"])
    key = bvp.run_key("demo", "ours", bench.settings)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / f"{key}.json").write_text(json.dumps({"map50": 0.5}))
    monkeypatch.setattr(bench, "train", lambda *a: pytest.fail("a finished result was trained again"))
    assert bench.run(dataset, "ours") == {"map50": 0.5}


def test_finished_training_is_scored_not_retrained(tmp_path, monkeypatch):
    bench = _bench(tmp_path)
    dataset = bvp.Dataset("demo", tmp_path, tmp_path / "classes.txt", ["a"])
    key = bvp.run_key("demo", "ours", bench.settings)
    weights = tmp_path / "last.pth"
    weights.write_bytes(b"")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / f"{key}.train.json").write_text(json.dumps({"weights": str(weights), "train_wall_s": 60.0}))
    monkeypatch.setattr(bvp, "train_ours", lambda *a: pytest.fail("a finished training was run again"))
    monkeypatch.setattr(bench, "score", lambda *a: {"map50": 0.25, "map50_95": 0.125, "params": 1})
    row = bench.run(dataset, "ours")
    assert row["train_wall_s"] == 60.0 and row["map50"] == 0.25 and row["settings"]["epochs"] == 25
    assert json.loads((tmp_path / "results" / f"{key}.json").read_text()) == row


def test_the_peer_venv_sees_this_interpreters_torch(tmp_path):
    # the peers must train with the torch build ours uses, even when this interpreter is a venv's
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(tmp_path / "v")],
                   check=True)
    python = tmp_path / "v" / "bin" / "python"
    peer_setup.link_our_packages(python)
    found = subprocess.run([str(python), "-c", "import torch; print(torch.__version__, torch.__file__)"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert found == [torch.__version__, torch.__file__]


def test_ours_variants_add_their_flags_and_a_changed_flag_trains_again(tmp_path, monkeypatch):
    bench = _bench(tmp_path, "--ours", "before=--epochs 25 --progressive-size 0", "ours")
    assert bench.ours == {"before": "--epochs 25 --progressive-size 0", "ours": ""}
    dataset = bvp.Dataset("demo", tmp_path, tmp_path / "classes.txt", ["a"])
    commands = []

    def fake_run(cmd, log, env, cwd):
        commands.append([str(c) for c in cmd])
        (log.parent / cmd[cmd.index("--name") + 1]).mkdir(parents=True, exist_ok=True)
        (log.parent / cmd[cmd.index("--name") + 1] / "last.pth").write_bytes(b"")
        return 60.0

    monkeypatch.setattr(bvp, "run_logged", fake_run)
    monkeypatch.setattr(bench, "score", lambda *a: {"map50": 0.5, "map50_95": 0.25, "params": 1})
    rows = [bench.run(dataset, model) for model in ("before", "ours")]
    assert commands[0][-4:] == ["--epochs", "25", "--progressive-size", "0"] and commands[1][-1] == "--quiet"
    assert [r["ours_flags"] for r in rows] == ["--epochs 25 --progressive-size 0", ""]
    assert bench.run(dataset, "before") == rows[0] and len(commands) == 2  # finished: reused
    changed = _bench(tmp_path, "--ours", "before=--epochs 20")
    changed.score = bench.score
    assert changed.run(dataset, "before")["ours_flags"] == "--epochs 20" and commands[2][-2:] == ["--epochs", "20"]
    notes = bvp.table_notes(SETTINGS, [{**rows[0], "train_wall_s": 120.0}, rows[1]])
    assert "; before: train.py --epochs 25 --progressive-size 0" in notes
    assert "; train wall time: demo ours 0.50x before" in notes


@pytest.mark.parametrize("bad", ["a b", "=--epochs 3", "x=--phi 'unclosed", "x=--input-size 416",
                                 "x=--epochs 3 --save-dir=elsewhere"])
def test_a_bad_ours_variant_is_refused(bad, capsys, tmp_path):
    with pytest.raises(SystemExit):
        bvp.make_parser().parse_args(["--ours", bad])
    assert "--ours" in capsys.readouterr().err
    with pytest.raises(ValueError, match="'yolov8n' is taken"):
        _bench(tmp_path, "--ours", "yolov8n")
