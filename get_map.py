"""Score a detector on a dataset split: VOC AP per class (devkit rules) and COCO mAP, with plots.

  python get_map.py                                  # the newest ./logs/**/best.pth on the default eval split
                                                     # (no best.pth: the newest last.pth or interrupted.pth)
  python get_map.py --weights logs/exp/best.pth --metric voc07
  python get_map.py --weights logs/exp/model_int8.onnx --backend openvino   # a graph on ONNX Runtime or OpenVINO
  python get_map.py --detections results.json        # score a saved COCO results file, no model

Images of the split that cannot be read, or whose ground truth is invalid (a box of `70px`, NaN, xmin > xmax),
stop the evaluation (exit code 1) with their names; with --skip-unreadable they are left out, and the table,
the summary and summary.json say how many images and ground-truth objects that was. Objects of classes outside
the class list are not scored, their images are (as the VOC devkit and pycocotools do); the table and
summary.json (left_out.classes) name them.

Training reports its mAP with the same evaluator and defaults (utils/eval/evaluator.py), so both agree.
Exit codes (utils/core/cli.py): 0 done, 1 bad input, 130 interrupted.
"""
import argparse
import importlib
import sys
from pathlib import Path

from utils.core.amp import set_threads
from utils.core.cli import run_main
from utils.core.settings import add_flags

# torch and the evaluator are imported when scoring starts, so that --help and flag errors are quick
_LAZY = {"graph_scoring": "utils.deploy.graph_scoring"}


def __getattr__(name):
    """get_map.graph_scoring: the module utils.deploy.graph_scoring, imported on first use."""
    if name in _LAZY:
        return importlib.import_module(_LAZY[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_parser() -> argparse.ArgumentParser:
    """get_map.py's flags, generated from the schema (utils/core/settings.py) by concern."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p, "get_map")
    return p


def output_dir(out, base: Path) -> Path:
    """--out, or a new map* folder under `base` (the weights' run folder, or map_out/)."""
    from utils.engine.run_logger import new_run_dir

    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        return out
    return new_run_dir(str(base), "map")


def settings_of(args) -> dict:
    """The evaluation settings (utils.eval.scoring.EvalSettings) among the parsed flags."""
    from utils.eval.scoring import SETTING_NAMES

    return {k: v for k, v in vars(args).items() if k in SETTING_NAMES}


def run(args) -> None:
    """Score, write the results folder and print the table, the headline and the settings."""
    from nets.attention import parse_attention
    from utils.deploy import graph_scoring
    from utils.eval.report import report_text, save_results

    set_threads(args.threads)
    if args.attention is not None or args.phi is not None:  # a bad --phi or --attention: said before the scan
        parse_attention(args.attention if args.attention is not None else args.phi)
    if args.slice:  # a bad --slice or --overlap: said before the scan too
        from utils.ops.slicing import flag_slicing
        flag_slicing(args.slice, args.overlap, args.slice_full)
    scored = graph_scoring.score(**settings_of(args))
    out = output_dir(args.out, scored.base)
    save_results(out, scored, plots=not args.no_plots)
    print(report_text(scored.result))
    print(f"results in {out}")


def main(argv=None) -> int:
    """get_map.py with `argv` (default: the command line); returns the exit code (utils/core/cli.py)."""
    return run_main("get_map.py", lambda: run(make_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
