"""The ultralytics side of bench/bench_vs_peer.py (YOLOv8n, YOLO11n, YOLO26n, ...); runs in the peer's venv.

    <venv>/bin/python bench/peer_ultralytics.py train --model yolo11n.yaml --data d.yaml --project D --name R --info i.json
    <venv>/bin/python bench/peer_ultralytics.py predict --weights last.pt --images val.txt --out detections.json

No downloads: the model is built from its yaml (random weights, pretrained=False), AMP checks and
plots are off, ultralytics' font check (it fetches Arial.ttf for plots even when plots are off) is
skipped, YOLO_OFFLINE/YOLO_AUTOINSTALL keep it from probing the network or pip-installing, and every
internet connection or name lookup in this process is refused and recorded under `network_attempts`
in the JSON it writes, so a run that would have fetched something says so instead of doing it.
Settings go to YOLO_CONFIG_DIR (default: <venv>/ultralytics-config), not the user's config folder.
Prediction leaves ultralytics' `nms` unset, so a model with an NMS-free end-to-end head (YOLO26) is
scored from its one-to-many head with class-aware NMS at --iou, as every other model; the JSON says
which head it used.
"""
import argparse
import csv
import json
import os
import socket
import sys
from pathlib import Path

NETWORK_ATTEMPTS = []


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train from the model yaml, no weights",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--data", required=True, help="ultralytics data YAML")
    t.add_argument("--model", default="yolov8n.yaml",
                   help="ultralytics model yaml (yolov8n.yaml, yolo11n.yaml, yolo26n.yaml, ...), random weights")
    t.add_argument("--imgsz", type=int, default=320, help="training image size")
    t.add_argument("--epochs", type=int, default=25, help="epochs")
    t.add_argument("--batch", type=int, default=8, help="batch size")
    t.add_argument("--workers", type=int, default=2, help="loader workers (ultralytics uses 0 on CPU whatever asked)")
    t.add_argument("--project", required=True, help="folder of the run folder")
    t.add_argument("--name", required=True, help="run folder name (reused: exist_ok)")
    t.add_argument("--info", required=True, help="JSON written at the end: version, weights, network attempts")
    t.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    d = sub.add_parser("predict", help="detections on a list of images, in original-image pixels",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d.add_argument("--weights", required=True, help="a trained .pt (e.g. weights/last.pt)")
    d.add_argument("--images", required=True, help="text file, one image path a line")
    d.add_argument("--out", required=True, help="JSON written: detections (one list per image, in order) and info")
    d.add_argument("--imgsz", type=int, default=320, help="inference image size")
    d.add_argument("--conf", type=float, default=0.001, help="confidence threshold")
    d.add_argument("--iou", type=float, default=0.5, help="NMS IoU threshold (class-aware NMS)")
    d.add_argument("--max-det", type=int, default=300, help="most detections per image")
    d.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p


def refuse_network() -> None:
    """Refuse, and record in NETWORK_ATTEMPTS, every internet connection and name lookup of this process."""
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            NETWORK_ATTEMPTS.append(f"connect {address}")
            raise OSError(f"network disabled for the benchmark: connect {address}")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        NETWORK_ATTEMPTS.append(f"lookup {host}")
        raise socket.gaierror(f"network disabled for the benchmark: lookup {host}")

    socket.socket.connect = connect
    socket.getaddrinfo = getaddrinfo


def offline_environment() -> None:
    """Environment ultralytics reads at import: no online probes, no pip installs, settings kept in the venv."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(sys.prefix) / "ultralytics-config"))


def _no_font(*args, **kwargs) -> None:
    return None


def skip_font_check() -> None:
    """check_det_dataset() downloads Arial.ttf for plots even with plots=False; plots are off, so skip it."""
    import ultralytics.data.utils as data_utils

    if not hasattr(data_utils, "check_font"):
        raise RuntimeError("ultralytics.data.utils.check_font not found: this ultralytics version differs from the "
                           "one the bench was written for; pin --peer-package to it")
    data_utils.check_font = _no_font


def set_threads(threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


def write_json(obj, path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj), encoding="utf-8")
    os.replace(tmp, path)


def train(args: argparse.Namespace) -> None:
    import ultralytics
    from ultralytics import YOLO

    model = YOLO(args.model)
    project = Path(args.project).resolve()
    model.train(data=str(Path(args.data).resolve()), imgsz=args.imgsz, epochs=args.epochs, batch=args.batch,
                workers=args.workers, device="cpu", pretrained=False, amp=False, plots=False, val=False,
                project=str(project), name=args.name, exist_ok=True)
    weights = project / args.name / "weights" / "last.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"ultralytics finished without writing {weights}")
    write_json({"ultralytics": ultralytics.__version__, "model_yaml": args.model, "weights": str(weights),
                **own_final_metrics(project / args.name / "results.csv"), "network_attempts": NETWORK_ATTEMPTS},
               args.info)


def own_final_metrics(results_csv: Path) -> dict:
    """ultralytics' own mAP of the last epoch (its validation at conf 0.001, NMS IoU 0.7), a cross-check."""
    with open(results_csv, newline="", encoding="utf-8") as f:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]
    last = rows[-1] if rows else {}
    return {"own_map50": float(last.get("metrics/mAP50(B)", "nan")),
            "own_map50_95": float(last.get("metrics/mAP50-95(B)", "nan"))}


def has_nms_free_head(model) -> bool:
    """Whether the (unfused) detection head carries an end-to-end, one-to-one branch, as YOLO26's does."""
    return getattr(model.model.model[-1], "one2one_cv2", None) is not None


def inference_params(model, used_nms_free_head: bool) -> int:
    """Parameters of the model as it predicts: without the head branch (one-to-one or one-to-many) left unused."""
    head = model.model.model[-1]
    branches = [name[len("one2one_"):] if used_nms_free_head else name
                for name in head._modules if name.startswith("one2one_")]
    unused = sum(p.numel() for name in branches if getattr(head, name, None) is not None
                 for p in getattr(head, name).parameters())
    return sum(p.numel() for p in model.model.parameters()) - unused


def predict(args: argparse.Namespace) -> None:
    import ultralytics
    from ultralytics import YOLO

    model = YOLO(args.weights)
    nms_free_head = has_nms_free_head(model)  # before predict: its copy of the model is fused to one branch
    paths = [line for line in Path(args.images).read_text(encoding="utf-8").splitlines() if line]
    detections = []
    for path in paths:  # one call per image keeps the output aligned with the list
        result = model.predict(source=path, imgsz=args.imgsz, conf=args.conf, iou=args.iou, max_det=args.max_det,
                               device="cpu", save=False, verbose=False)[0]
        detections.append(result.boxes.data[:, :6].cpu().float().tolist())  # x1, y1, x2, y2, conf, cls
    used_nms_free_head = bool(model.predictor and getattr(model.predictor.model, "end2end", False))
    params = inference_params(model, used_nms_free_head)
    write_json({"ultralytics": ultralytics.__version__, "params": params, "detections": detections,
                "settings": {"imgsz": args.imgsz, "conf": args.conf, "iou": args.iou, "max_det": args.max_det,
                             "nms_free_head": nms_free_head, "used_nms_free_head": used_nms_free_head},
                "network_attempts": NETWORK_ATTEMPTS}, args.out)


def main(args: argparse.Namespace) -> None:
    offline_environment()
    refuse_network()
    set_threads(args.threads)
    skip_font_check()
    if args.command == "train":
        train(args)
    else:
        predict(args)
    if NETWORK_ATTEMPTS:
        print(f"refused network access: {NETWORK_ATTEMPTS}", file=sys.stderr)


if __name__ == "__main__":
    main(make_parser().parse_args())
