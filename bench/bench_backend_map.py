"""mAP of one model on each backend and precision, scored the way a user scores it: predict.py --save-json on
the images of the evaluation split, then get_map.py --detections (each script's main, in this process); one
table, each row against the ONNX Runtime row of the same graph.

    python bench/bench_backend_map.py --weights logs/exp/best.pth --data demo_data/demo

Rows: torch (--amp off and bf16), onnx (fp32 graph), openvino (fp32 graph, --amp off and bf16), and the int8 graph
(YOLO.export_onnx with --calib-images calibration images of the training split, as predict.py --export-onnx
--int8 and python -m utils.deploy.quantize make it) on onnx and on openvino (--amp off and bf16).
predict.py runs with --conf 0.001 --nms 0.5, get_map.py's own defaults, so the scores are get_map.py's.
bf16 rows on a CPU without native bf16 are emulated (torch) or run as the plugin decides (openvino): the
precision column is what predict.py printed.
"""
import argparse
import contextlib
import io
import json
import re
import sys
import tempfile
from pathlib import Path

import onnxruntime
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import get_map  # noqa: E402
import predict  # noqa: E402
from utils.core.amp import cpu_name, cpu_supports_bf16  # noqa: E402
from utils.data.layouts import open_dataset  # noqa: E402
from utils.deploy.quantize import calibration_images  # noqa: E402
from utils.deploy.openvino_backend import import_openvino  # noqa: E402
from utils.data.voc import load_samples  # noqa: E402
from yolo import YOLO  # noqa: E402

# (row, graph: the weights or their int8 graph, --backend, --amp, the row it is compared with)
ROWS = (("onnx fp32", "weights", "onnx", "off", "onnx fp32"),
        ("torch fp32", "weights", "torch", "off", "onnx fp32"),
        ("torch bf16", "weights", "torch", "bf16", "onnx fp32"),
        ("openvino fp32", "weights", "openvino", "off", "onnx fp32"),
        ("openvino bf16", "weights", "openvino", "bf16", "onnx fp32"),
        ("onnx int8", "int8", "onnx", "off", "onnx int8"),
        ("openvino int8", "int8", "openvino", "off", "onnx int8"),
        ("openvino int8 bf16", "int8", "openvino", "bf16", "onnx int8"))
ROW_WIDTH, PRECISION_WIDTH = 20, 24  # the table's first two columns


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="the checkpoint to score")
    p.add_argument("--data", required=True, help="the dataset (what get_map.py --data takes)")
    p.add_argument("--split", help="the split to score (default: the dataset's evaluation split)")
    p.add_argument("--calib-images", type=int, default=100, help="int8 calibration images (default: 100)")
    p.add_argument("--out", help="keep each row's detections and scores here, replacing what an earlier run left "
                   "(default: a temporary folder)")
    return p


def run(script_main, argv, what: str) -> str:
    """What a script's main(argv) prints to stdout; its warnings and errors go to stderr as they come."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = script_main([str(a) for a in argv])
    if code:
        raise ValueError(f"{what} failed with exit code {code} (its message is above)")
    return out.getvalue()


def split_images(data: str, split, class_names, folder: Path) -> str:
    """Links to the images of `split` of `data` in `folder` (predict.py --dir reads a folder); returns the split."""
    dataset = open_dataset(data)
    split = split or dataset.default_split("eval")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():  # links an earlier run left; anything else is not this bench's to delete
        if not old.is_symlink():
            raise ValueError(f"{folder} holds {old.name}, which this bench did not make: give another --out")
        old.unlink()
    for sample in load_samples(dataset, split, class_names):
        link = folder / Path(sample.image_path).name
        if link.is_symlink():
            raise ValueError(f"{data} [{split}]: two images named {link.name}; predict.py --dir needs unique names")
        link.symlink_to(Path(sample.image_path).resolve())
    return split


def score_row(args, row, graph: Path, backend: str, amp: str, images: Path, split: str, out: Path):
    """(precision predict.py printed, mAP@0.5, mAP@0.5:0.95) of one row."""
    pred, scored = out / f"pred {row}", out / f"map {row}"
    printed = run(predict.main, ["--weights", graph, "--dir", images, "--conf", "0.001", "--nms", "0.5",
                   "--backend", backend, "--amp", amp, "--device", "cpu", "--save-json", "--out", pred], row)
    run(get_map.main, ["--detections", pred / "detections.json", "--classes", out / "classes.txt",
         "--data", args.data, "--split", split, "--no-plots", "--out", scored], f"scoring {row}")
    summary = json.loads((scored / "summary.json").read_text())
    precision = re.search(r"precision (.+) \(--amp", printed)
    return precision.group(1) if precision else "?", summary["map50"], summary["map50_95"]


def main(args) -> None:
    openvino = import_openvino()  # one line naming `pip install openvino` when it is missing
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        class_names = YOLO(args.weights, device="cpu").class_names
        (out / "classes.txt").write_text("\n".join(class_names) + "\n")
        split = split_images(args.data, args.split, class_names, out / "images")
        graphs = {"weights": Path(args.weights), "int8": out / "model_int8.onnx"}
        fp32 = YOLO(args.weights, device="cpu", amp="off")
        fp32.export_onnx(graphs["int8"], calibration_images=calibration_images(args.data, None, class_names,
                                                                               args.calib_images))
        print(f"{args.weights} on {args.data} [{split}], {len(list((out / 'images').iterdir()))} images; CPU "
              f"{cpu_name()}, native bf16: {'yes' if cpu_supports_bf16() else 'no'}; torch {torch.__version__}, "
              f"ONNX Runtime {onnxruntime.__version__}, OpenVINO {openvino.__version__}")
        print(f"{'row':<{ROW_WIDTH}}{'precision':<{PRECISION_WIDTH}}{'mAP@0.5':>9}{'mAP@.5:.95':>12}{'d mAP@0.5':>11}"
              f"{'d @.5:.95':>11}  vs")
        scores = {}
        for row, graph, backend, amp, reference in ROWS:
            precision, *scores[row] = score_row(args, row, graph=graphs[graph], backend=backend, amp=amp,
                                                images=out / "images", split=split, out=out)
            d50, d95 = (a - b for a, b in zip(scores[row], scores[reference]))
            print(f"{row:<{ROW_WIDTH}}{precision:<{PRECISION_WIDTH}}{scores[row][0]:>9.4f}{scores[row][1]:>12.4f}"
                  f"{d50:>+11.4f}{d95:>+11.4f}  {reference}", flush=True)


if __name__ == "__main__":
    try:
        main(make_parser().parse_args())
    except (ValueError, OSError) as e:  # bad input or a missing optional package: one line
        sys.exit(f"bench_backend_map.py: {e}")
