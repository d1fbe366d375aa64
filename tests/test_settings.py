"""The schema (utils/core/settings.py): every script's flags come from it, each default is written once."""
import argparse
import ast
import importlib
from pathlib import Path

import numpy as np
import pytest

from utils.core import schema_tools, schema_train
from utils.core.setting import TOOLS, input_size
from utils.core.settings import SETTINGS, add_flags, check_overrides, tool_settings

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"train": "train", "get_map": "get_map", "predict": "predict", "ablate": "ablate",
           "anchors": "utils.data.anchors", "convert": "utils.data.convert", "demo_data": "utils.data.demo_data",
           "quantize": "utils.deploy.quantize", "summary": "nets.summary"}


def parser_actions(parser: argparse.ArgumentParser):
    """Every flag of `parser` and of its subcommands' parsers."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parser_actions(sub)
        elif action.option_strings and action.dest != "help":
            yield action


def walked():
    """(tool, action) for every flag of every script's parser."""
    for tool, module in SCRIPTS.items():
        for action in parser_actions(importlib.import_module(module).make_parser()):
            yield tool, action


def test_every_flag_of_every_script_is_its_schema_entry():
    seen = {}
    for tool, action in walked():
        assert action.dest in SETTINGS, f"{tool}: {action.option_strings} is not in the schema"
        s = SETTINGS[action.dest]
        assert tool in s.tools, f"{tool} takes {s.option}, which the schema does not list for it"
        assert action.option_strings[0] == s.option and action.help == s.help_text()
        assert action.type == s.type and (tuple(action.choices) if action.choices else None) == s.choices_for(tool)
        assert action.nargs == (s.nargs if s.kind == "value" else 0)
        value = s.default_for(tool)
        assert action.default == (list(value) if isinstance(value, tuple) else value), (tool, s.name)
        seen.setdefault(s.name, set()).add(tool)
    shared = {name: tools for name, tools in seen.items() if len(tools) > 1}
    assert len(shared) >= 15 and {"classes", "data", "input_size", "device", "amp", "workers"} <= set(shared)
    for name, tools in seen.items():  # the schema lists no tool that does not take the flag
        assert tools == set(SETTINGS[name].tools), name


def test_a_shared_flag_reads_the_same_in_every_script():
    helps = {}
    for tool, action in walked():
        helps.setdefault(action.dest, set()).add((action.help, action.type, action.option_strings[0]))
    assert all(len(forms) == 1 for forms in helps.values()), {k: v for k, v in helps.items() if len(v) > 1}


def test_no_parser_is_written_outside_the_schema():
    """add_argument appears only where the schema generates flags (and for positional arguments)."""
    found = []
    for path in product_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                first = node.args[0] if node.args else None
                if isinstance(first, ast.Constant) and str(first.value).startswith("-"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == [], found


def product_files():
    skip = {"tests", "bench", ".git", "demo_data", "logs"}
    return [p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts[:1])
            and p.name != "setting.py" and "venv" not in p.parts]


@pytest.mark.parametrize("tool", [t for t in SCRIPTS if "input_size" in {s.name for s in tool_settings(t)}])
def test_input_size_takes_one_number_or_h_w_in_every_script(tool):
    parser = importlib.import_module(SCRIPTS[tool]).make_parser()
    need = {"convert": ["--from", "voc", "--to", "yolo", "a", "b"], "quantize": ["--weights", "w.pth"]}.get(tool, [])
    assert parser.parse_args(need + ["--input-size", "416"]).input_size == 416
    assert parser.parse_args(need + ["--input-size", "384,640"]).input_size == (384, 640)
    with pytest.raises(SystemExit):
        parser.parse_args(need + ["--input-size", "400"])


def test_input_size_type():
    assert input_size("416") == 416 and input_size("384, 640") == (384, 640) and input_size([320, 320]) == (320, 320)
    for bad in ("0", "416,", "a", "32,32,32", "-32"):
        with pytest.raises(argparse.ArgumentTypeError, match="multiple of 32"):
            input_size(bad)


def test_choices_written_as_tuples_equal_their_registries():
    from nets.attention import FUSION_NAMES, PHI_NAMES
    from utils.core.cli import choices_help
    from utils.data.convert import WRITE_FORMATS
    from utils.data.demo_data import STYLES
    from utils.data.layouts import DATA_FORMATS
    from utils.deploy.cam import CAM_METHODS, DEFAULT_METHOD, DEFAULT_TOP_K, HEAD_LAYER
    from utils.deploy.quantize import CALIB_METHODS, DEFAULT_CALIB_IMAGES, WEIGHT_BITS
    from utils.engine.loss import ASSIGNERS, BOX_LOSSES
    from utils.engine.recipes import RECIPES
    from utils.eval import evaluator as ev
    assert schema_train.PHI_HELP == choices_help(PHI_NAMES) and schema_train.FUSIONS == tuple(FUSION_NAMES)
    assert schema_train.DATA_FORMATS == tuple(DATA_FORMATS) and schema_train.RECIPE_NAMES == tuple(RECIPES)
    assert schema_train.BOX_LOSSES == tuple(BOX_LOSSES) and schema_train.ASSIGNERS == tuple(ASSIGNERS)
    assert schema_tools.METRICS == tuple(ev.METRICS) and schema_tools.COCO_BACKENDS == tuple(ev.COCO_BACKENDS)
    assert schema_tools.CAM_METHODS == tuple(CAM_METHODS) and schema_tools.CALIB_METHODS == tuple(CALIB_METHODS)
    assert schema_tools.WEIGHT_BITS == tuple(WEIGHT_BITS) and schema_tools.WRITE_FORMATS == tuple(WRITE_FORMATS)
    assert schema_tools.DEMO_STYLES == tuple(STYLES)
    assert (SETTINGS["cam_method"].default, SETTINGS["cam_top"].default, SETTINGS["cam_layer"].default) == (
        DEFAULT_METHOD, DEFAULT_TOP_K, HEAD_LAYER)
    assert SETTINGS["calib_images"].default == DEFAULT_CALIB_IMAGES
    assert (SETTINGS["conf"].default_for("get_map"), SETTINGS["nms"].default_for("get_map"),
            SETTINGS["iou"].default, SETTINGS["score_thr"].default) == (ev.CONF_THRES, ev.NMS_THRES, ev.IOU_THRES,
                                                                       ev.SCORE_THRES)


def test_overrides_refuse_an_unknown_key_with_the_nearest_name_and_a_wrong_type():
    with pytest.raises(ValueError, match=r"cfg.yaml: unknown setting 'box_weigth' \(did you mean box_weight\?\)"):
        check_overrides({"box_weigth": 0.1}, "cfg.yaml")
    with pytest.raises(ValueError, match="cfg.yaml: lr must be a number, found 'fast'"):
        check_overrides({"lr": "fast"}, "cfg.yaml")
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adam, adamw"):
        check_overrides({"optimizer": "lion"}, "cfg.yaml")
    with pytest.raises(ValueError, match="scale must be a list of 2 values"):
        check_overrides({"scale": [0.5]}, "cfg.yaml")
    with pytest.raises(ValueError, match="ema must be true or false"):
        check_overrides({"ema": "no"}, "cfg.yaml")
    with pytest.raises(ValueError, match="data must be text, found None"):
        check_overrides({"data": None}, "cfg.yaml")
    assert check_overrides({"lr": 1, "scale": (0.5, 2), "input_size": 320, "ema": False}, "x") == {
        "lr": 1.0, "scale": [0.5, 2.0], "input_size": 320, "ema": False}


def test_add_flags_groups_by_concern_and_tools_are_known():
    p = argparse.ArgumentParser()
    actions = add_flags(p, "get_map", concerns=("detection",))
    assert set(actions) == {"conf", "nms", "agnostic_nms"} and p.parse_args([]).conf == 0.001
    assert [g.title for g in p._action_groups][-1] == "detection"
    with pytest.raises(ValueError, match="unknown tool"):
        tool_settings("tarin")
    assert set(TOOLS) >= set(SCRIPTS)


# Settings whose defaults library signatures used to repeat (predict's 0.5/0.3/300 in 8 of them), and the names
# the library gives them; plumbing defaults (seed, workers, device, batch size) are the caller's, not settings'.
CHECKED_CONCERNS = ("detection", "evaluation", "loss", "augmentation", "maps", "export", "quantize")
ALIASES = {"conf_thres": "conf", "nms_thres": "nms", "iou_thres": "iou", "top_k": "cam_top"}
CONSTANTS = {"CONF_THRES": ("conf", "get_map"), "NMS_THRES": ("nms", "get_map"), "IOU_THRES": ("iou", None),
             "SCORE_THRES": ("score_thr", None), "DEFAULT_TOP_K": ("cam_top", None),
             "DEFAULT_METHOD": ("cam_method", None), "HEAD_LAYER": ("cam_layer", None),
             "DEFAULT_CALIB_IMAGES": ("calib_images", None)}


def repeated_defaults(text: str, where: str):
    """'where:line name=value' for each literal default in `text` that repeats a checked setting's default."""
    def repeats(name, node):
        s = SETTINGS.get(ALIASES.get(name, name))
        if s is None or s.concern not in CHECKED_CONCERNS or not isinstance(node, ast.Constant):
            return False
        return node.value is not None and not isinstance(node.value, bool) and node.value in (
            s.default, *s.tool_defaults.values())

    found = []
    for node in ast.walk(ast.parse(text)):
        pairs = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            positional = node.args.posonlyargs + node.args.args
            pairs = list(zip(positional[len(positional) - len(node.args.defaults):], node.args.defaults))
            pairs += [(a, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d is not None]
            pairs = [(a.arg, d) for a, d in pairs]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            pairs = [(node.target.id, node.value)]
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in CONSTANTS and isinstance(node.value, ast.Constant):
                found.append(f"{where}:{node.lineno} {name}={node.value.value!r}")
        found += [f"{where}:{node.lineno} {n}={d.value!r}" for n, d in pairs if repeats(n, d)]
    return found


def test_no_default_of_a_setting_is_written_again_in_the_product_code():
    """The defaults of detection, evaluation, loss, augmentation and export live in the schema only: the library
    signatures, dataclass fields and constants that need one read it (utils.core.settings.default)."""
    found = [hit for path in product_files() if "core/schema" not in path.as_posix()
             for hit in repeated_defaults(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert found == [], found
    planted = "def f(x, conf_thres=0.25, max_det=300, seed=0, topk=10):\n    pass\nCONF_THRES = 0.001\n"
    assert sorted(h.split(" ")[1] for h in repeated_defaults(planted, "x.py")) == [
        "CONF_THRES=0.001", "conf_thres=0.25", "max_det=300", "topk=10"]


@pytest.mark.slow
def test_train_takes_h_w_as_every_script_does(tmp_path, monkeypatch):
    """train.py --input-size 96,128 trains at 96 x 128; its record repeats the run and its checkpoint says so."""
    import train
    from tests.helpers.voc import write_tiny_voc
    from utils.engine.checkpoint import read_checkpoint
    from utils.engine.run_logger import read_yaml
    monkeypatch.setenv("YOLO_SCAN_CACHE", str(tmp_path / "cache"))
    data = write_tiny_voc(tmp_path / "voc", 2)
    assert train.main(["--data", str(data), "--classes", str(data / "classes.txt"), "--input-size", "96,128",
                       "--batch-size", "2", "--workers", "0", "--save-dir", str(tmp_path / "runs"), "--quiet",
                       "--eval-period", "0", "--epochs", "1"]) == 0
    run = tmp_path / "runs" / "exp"
    ckpt = read_checkpoint(run / "last.pth")
    assert ckpt["args"]["input_size"] == [96, 128] and list(ckpt["input_size"]) == [96, 128]
    assert read_yaml(run / "run_args.yaml")["input_size"] == [96, 128]
    assert tuple(train.parse_args(["--config", str(run / "run_args.yaml")]).input_size) == (96, 128)
    assert train.parse_args(["--input-size", "128,128"]).input_size == (128, 128)  # make_config reads it as 128
    from yolo import YOLO
    detector = YOLO(run / "last.pth", device="cpu")
    assert tuple(detector.spec.input_size) == (96, 128)
    detector.detect(np.zeros((60, 200, 3), np.uint8))


def test_a_renamed_flag_keeps_its_old_name_and_help_says_so():
    from utils.core.setting import Setting
    renamed = Setting("box_gain", 0.4, "weight of the box loss", "loss", ("train",), type=float,
                      aliases=("--box-weight",))
    p = argparse.ArgumentParser()
    renamed.add_to(p, "train")
    assert p.parse_args(["--box-weight", "0.1"]).box_gain == 0.1 and p.parse_args([]).box_gain == 0.4
    assert "--box-weight, its former name, works for one more release" in renamed.help_text()
