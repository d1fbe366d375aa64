"""Detect objects in an image, a folder, a video or a camera; benchmark speed; export ONNX.

    python predict.py --img img/street.jpg                  # annotated image + one line per detection
    python predict.py --dir img/ --save-json --crop --count
    python predict.py --video clip.mp4                      # or --video 0 for the first camera
    python predict.py --fps --backend onnx                  # ms for pre, forward, post and FPS
    python predict.py --export-onnx model.onnx [--export-onnx-nms]
    python predict.py --export-onnx model_int8.onnx --int8 [--data VOCdevkit --calib-images 100]
    python predict.py --weights model_int8.onnx --img a.jpg        # an exported graph, run by ONNX Runtime
    python predict.py --weights yolov4-tiny.weights --classes model_data/coco_classes.txt --img a.jpg
    python predict.py --img a.jpg --cam [--cam-method layercam --cam-layer feat1 --cam-top 4]   # <name>_cam.jpg

--amp (default auto) runs the torch backend's network under bf16 autocast on CPUs with native bf16
(and on CUDA); decoding and NMS stay fp32. The precision in use is printed at start.

Outputs go to --out (default: a new numbered folder out/predict/exp1, exp2, ...). Nothing opens a
window unless --show is given. Exit codes (utils/core/cli.py): 0 done, 1 bad input (one line on
stderr), 130 interrupted.
"""
import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from nets.attention import PHI_NAMES
from utils.core.amp import AMP_CHOICES
from utils.core.cli import UserError, choices_help, run_main
from utils.core.config import parse_input_size
from utils.core.fileio import write_bytes_atomic
from utils.core.paths import LOGS, newest_best
from utils.deploy.attention_maps import save_attention_maps
from utils.deploy.cam import CAM_METHODS, DEFAULT_METHOD, DEFAULT_TOP_K, HEAD_LAYER, cam_grid, cam_layers
from utils.deploy.drawing import save_image
from utils.data.layouts import add_data_flags, data_options
from utils.deploy.quantize import calibration_images
from utils.eval.detect import write_coco_results
from utils.ops.image import IMAGE_EXTENSIONS, ImageReadError, read_image
from yolo import YOLO

ROOT = Path(__file__).resolve().parent
COCO_CLASSES = ROOT / "model_data" / "coco_classes.txt"


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--img", help="image file to detect in (default: none)")
    src.add_argument("--dir", help="folder of images; unreadable files are skipped with a warning (default: none)")
    src.add_argument("--video", help="video file, or a camera index such as 0 (default: none)")
    src.add_argument("--export-onnx", metavar="PATH", help="write an ONNX graph (opset 17, dynamic batch) and exit")
    p.add_argument("--export-onnx-nms", action="store_true",
                   help="with --export-onnx: put decoding, --conf, --nms and --max-det inside the graph (default: off)")
    p.add_argument("--int8", action="store_true",
                   help="with --export-onnx: quantize the raw graph to int8 (static, QDQ) with calibration images "
                        "from --data; run it with --weights PATH.onnx (default: off)")
    p.add_argument("--data", default="VOCdevkit",
                   help="dataset the --int8 calibration images come from; the demo dataset when VOCdevkit/ is "
                        "empty (default: VOCdevkit)")
    p.add_argument("--split", help="split of --data for calibration (default: the training split)")
    add_data_flags(p)
    p.add_argument("--calib-images", type=int, default=100,
                   help="calibration images for --int8, spread evenly over the split (default: 100)")
    p.add_argument("--fps", action="store_true",
                   help="benchmark the whole detect path on --img (or a random 640x480 image) (default: off)")
    p.add_argument("--fps-runs", type=int, default=50, help="timed runs for --fps (default: 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs before --fps timing (default: 5)")
    add_map_flags(p)
    p.add_argument("--save-txt", action="store_true",
                   help="write labels/<name>.txt: 'class score x1 y1 x2 y2' per line (default: off)")
    p.add_argument("--save-json", action="store_true",
                   help="write detections.json in COCO results format, as get_map.py writes and reads it: "
                        "category_id is the class index + 1, with category_name; image_id is the output name "
                        "(an int when it is digits) (default: off)")
    p.add_argument("--crop", action="store_true", help="write crops/<class>/<name>_<i>.jpg per detection (default: off)")
    p.add_argument("--count", action="store_true", help="print the objects per class (default: off)")
    p.add_argument("--max-frames", type=int, default=0, help="stop a video after this many frames; 0 = all (default: 0)")
    p.add_argument("--show", action="store_true", help="also show results in a window (needs a GUI OpenCV) (default: off)")
    p.add_argument("--weights", help="our checkpoint, a reference .pth, darknet .weights or a .onnx graph written by "
                                     "--export-onnx (default: the newest best.pth under --logs)")
    p.add_argument("--logs", default=str(LOGS), help="where to look for best.pth without --weights "
                                                    "(default: logs, in the working directory)")
    p.add_argument("--classes", help="classes file, for files that do not name their classes "
                                     "(default: from the checkpoint; coco_classes.txt for .weights)")
    p.add_argument("--phi", type=int, help=f"attention of a reference .pth: {choices_help(PHI_NAMES)} (default: none)")
    p.add_argument("--attention", help="attention spec, for files that do not carry it (default: the checkpoint's)")
    p.add_argument("--input-size", help="input size, '416' or 'H,W', multiples of 32 (default: the checkpoint's, or 416)")
    p.add_argument("--scale-x-y", type=float, help="grid sensitivity (default: the checkpoint's; 1.05 for .weights)")
    p.add_argument("--conf", type=float, default=0.5, help="score threshold (default: 0.5)")
    p.add_argument("--nms", type=float, default=0.3, help="NMS IoU threshold (default: 0.3)")
    p.add_argument("--max-det", type=int, default=300, help="most detections per image (default: 300)")
    p.add_argument("--letterbox", action=argparse.BooleanOptionalAction, default=True,
                   help="keep aspect ratio with grey padding; --no-letterbox stretches (default: on)")
    p.add_argument("--backend", choices=("torch", "onnx"),
                   help="inference engine (default: torch; onnx for .onnx weights, which run only there)")
    p.add_argument("--amp", choices=AMP_CHOICES, default="auto",
                   help="autocast for the torch backend: auto = bf16 on CPUs with native bf16 and on CUDA, "
                        "else off (fp32) (default: auto)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default: auto)")
    p.add_argument("--out", help="output folder, files overwritten (default: a new out/predict/expN)")
    return p


def add_map_flags(p: argparse.ArgumentParser) -> None:
    """The per-image maps: objectness heatmap, attention maps, class activation maps."""
    p.add_argument("--heatmap", action="store_true", help="also write an objectness heatmap per image (default: off)")
    p.add_argument("--attention-map", action="store_true",
                   help="also write, per attention site, the block's spatial map over the image (<name>_att_<site>.jpg; "
                        "CBAM, coordinate, triplet attention) or its channel weights (.png; SE, ECA, ...) (default: off)")
    p.add_argument("--cam", action="store_true",
                   help="also write <name>_cam.jpg: per detection (best --cam-top) a class activation map of its score "
                        "over the image, with its box (torch network only) (default: off)")
    p.add_argument("--cam-method", choices=tuple(CAM_METHODS), default=DEFAULT_METHOD,
                   help="layercam (gradients kept per position), gradcam (gradients averaged per channel: lights up "
                        "whatever looks like the detection) or eigencam (first principal component, gradient-free, "
                        f"the same for every detection) (default: {DEFAULT_METHOD})")
    p.add_argument("--cam-layer", default=HEAD_LAYER,
                   help=f"{HEAD_LAYER} (the input of each detection's own head), an attention site (feat1, feat2, "
                        f"upsample, csp1..csp3) or a module path of model.named_modules() (default: {HEAD_LAYER})")
    p.add_argument("--cam-top", type=int, default=DEFAULT_TOP_K,
                   help=f"CAMs for the best K detections of each image; 0 = all (default: {DEFAULT_TOP_K})")


def build_yolo(args):
    weights = Path(args.weights) if args.weights else newest_best(args.logs)
    if weights.is_dir():
        raise UserError(f"--weights {weights} is a folder; give a weights file in it (.pth, .weights or .onnx)")
    if not weights.is_file():
        raise UserError(f"weights file {weights} does not exist")
    classes = args.classes or (str(COCO_CLASSES) if weights.suffix == ".weights" else None)
    size = [int(s) for s in str(args.input_size).split(",")] if args.input_size else None
    if size is not None:
        size = parse_input_size(size[0] if len(size) == 1 else size)
    attention = args.attention if args.attention is not None else args.phi
    return YOLO(weights, classes=classes, attention=attention, input_size=size, conf=args.conf, nms=args.nms,
                letterbox=args.letterbox, device=args.device, backend=args.backend, max_det=args.max_det,
                scale_x_y=args.scale_x_y, amp=args.amp)


def output_dir(out) -> Path:
    if out:
        path = Path(out)
    else:
        base = ROOT / "out" / "predict"
        n = 1
        while (base / f"exp{n}").exists():
            n += 1
        path = base / f"exp{n}"
    path.mkdir(parents=True, exist_ok=True)
    return path


class Shower:
    """cv2.imshow when --show and OpenCV has a GUI; otherwise says so once and does nothing."""

    def __init__(self, enabled: bool, out: Path):
        self.enabled, self.out = enabled, out

    def __call__(self, rgb: np.ndarray, wait: int = 0) -> None:
        if not self.enabled:
            return
        try:
            cv2.imshow("predict", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            cv2.waitKey(wait)
        except cv2.error:
            print(f"--show: this OpenCV build has no window support (opencv-python-headless); results are in "
                  f"{self.out}. Install opencv-python instead of the headless build to see windows.")
            self.enabled = False


def describe(det, names, label: str) -> None:
    if not len(det):
        print(f"{label}: no detections")
        return
    print(f"{label}: {len(det)} detections")
    for box, score, cls in zip(det.boxes, det.scores, det.class_ids):
        x1, y1, x2, y2 = (round(float(v), 1) for v in box)
        print(f"  {names[cls]} {score:.3f} [{x1}, {y1}, {x2}, {y2}]")


def output_names(paths) -> dict:
    """{path: name} for the output files (annotated image, labels/<name>.txt, crops, heatmaps) and the image_id
    of --save-json: the file stem, or the whole file name when another image of the run has the same stem
    (a.png and a.jpg give a.png and a.jpg), so outputs never overwrite each other."""
    stems = Counter(Path(p).stem for p in paths)
    return {p: Path(p).stem if stems[Path(p).stem] == 1 else Path(p).name for p in paths}


def image_id(name: str):
    """COCO image_id for an output name: an int for digits without leading zeros (17), else the name."""
    return int(name) if name.isdigit() and str(int(name)) == name else name


def annotated_name(path: Path, name: str) -> str:
    """The annotated image's file name: `name` with the image's own suffix, or .jpg for other formats."""
    suffix = path.suffix.lower() if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp") else ".jpg"
    return name if name.lower().endswith(suffix) else f"{name}{suffix}"


def write_extras(yolo, image, det, name: str, out: Path, args) -> None:
    """The per-image outputs chosen by flags: heatmap, attention maps, CAMs, labels txt, crops."""
    names = yolo.class_names
    if args.heatmap:
        save_image(out / f"{name}_heatmap.jpg", yolo.heatmap(image))
    if args.cam:
        cams = yolo.cam(image, args.cam_method, args.cam_layer, args.cam_top)
        if cams:
            save_image(out / f"{name}_cam.jpg", cam_grid(image, cams, names))
        else:
            print(f"{name}: no detections, so no CAM")
    if args.attention_map:
        maps = yolo.attention_maps(image)
        if not maps:
            print(f"{name}: the model has no attention block with a map to show")
        save_attention_maps(out, name, image, maps)
    if args.save_txt:
        lines = [f"{names[c]} {s:.5f} {b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}"
                 for b, s, c in zip(det.boxes, det.scores, det.class_ids)]
        write_bytes_atomic(out / "labels" / f"{name}.txt", "".join(line + "\n" for line in lines).encode())
    if args.crop:
        for i, (box, cls) in enumerate(zip(det.boxes, det.class_ids)):
            x1, y1, x2, y2 = np.round(box).astype(int)
            if x2 > x1 and y2 > y1:
                save_image(out / "crops" / names[cls] / f"{name}_{i}.jpg", image[y1:y2, x1:x2])


def as_array(det) -> np.ndarray:
    """Detections -> float [K, 6]: x1, y1, x2, y2, score, class id."""
    return np.column_stack([det.boxes, det.scores, det.class_ids]).reshape(-1, 6)


def read_or_skip(path: Path, several: bool):
    """The image as RGB, or None with a warning when it cannot be read and other images follow."""
    try:
        return read_image(path)
    except ImageReadError as e:
        if not several:
            raise UserError(str(e)) from None
        print(f"warning: skipped {e}", file=sys.stderr)
        return None


def predict_images(yolo, paths, out: Path, args) -> Counter:
    """Detect in every path; unreadable ones are skipped with a warning when there are several, and
    UserError when none could be read."""
    counts, found, show = Counter(), [], Shower(args.show, out)
    names = output_names(paths)
    for path in paths:
        image = read_or_skip(path, len(paths) > 1)
        if image is None:
            continue
        det = yolo.detect(image)
        drawn = yolo.draw(image, det)
        save_image(out / annotated_name(path, names[path]), drawn)
        describe(det, yolo.class_names, str(path))
        write_extras(yolo, image, det, names[path], out, args)
        found.append((image_id(names[path]), as_array(det)))
        counts.update(yolo.class_names[c] for c in det.class_ids)
        if args.count:
            print("  counts: " + (", ".join(f"{k} {v}" for k, v in sorted(Counter(
                yolo.class_names[c] for c in det.class_ids).items())) or "none"))
        show(drawn)
    if not found:
        raise UserError(f"none of the {len(paths)} images in {paths[0].parent} could be read (see the warnings "
                           "above): nothing was detected")
    if args.save_json:
        write_coco_results(out / "detections.json", [d for _, d in found], [i for i, _ in found], yolo.class_names)
    return counts


def list_images(folder: Path) -> list:
    if not folder.is_dir():
        raise UserError(f"--dir {folder}: folder does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    if len(files) > len(images):
        print(f"note: {len(files) - len(images)} files in {folder} without an image extension were ignored")
    if not images:
        raise UserError(f"--dir {folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return images


def open_video(source: str):
    """cv2.VideoCapture for a camera index or a file; UserError when it cannot be read."""
    if source.isdigit():
        cap = cv2.VideoCapture(int(source))
    else:
        if not Path(source).is_file():
            raise UserError(f"--video {source}: file does not exist")
        cap = cv2.VideoCapture(source)
    ok = cap.isOpened()
    if ok:
        ok, first = cap.read()
    if not ok:
        cap.release()
        raise UserError(f"--video {source}: cannot be opened or holds no readable frames "
                           "(not a video, unsupported codec, or no such camera)")
    return cap, first


def predict_video(yolo, source: str, out: Path, args) -> Counter:
    """Annotate every frame into out/<name>.mp4 (mp4v); written to a temporary name, renamed at the end."""
    cap, frame = open_video(source)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    name = f"camera{source}" if source.isdigit() else Path(source).stem
    final, partial = out / f"{name}.mp4", out / f".{name}.partial.mp4"
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frame.shape[1], frame.shape[0]))
    counts, show, frames, start = Counter(), Shower(args.show, out), 0, time.perf_counter()
    try:
        while frame is not None:
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            det = yolo.detect(rgb)
            drawn = yolo.draw(rgb, det)
            writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            counts.update(yolo.class_names[c] for c in det.class_ids)
            show(drawn, wait=1)
            frames += 1
            if args.max_frames and frames >= args.max_frames:
                break
            ok, frame = cap.read()
            frame = frame if ok else None
    except KeyboardInterrupt:
        print("interrupted; keeping the frames written so far")
    finally:
        writer.release()
        cap.release()
    os.replace(partial, final)
    seconds = time.perf_counter() - start
    print(f"{final}: {frames} frames, {frames / max(seconds, 1e-9):.1f} FPS, {sum(counts.values())} detections")
    return counts


def run_fps(yolo, args, out: Path) -> None:
    image = read_image(args.img) if args.img else None
    ms = yolo.measure_speed(image, runs=args.fps_runs, warmup=args.warmup)
    print(f"backend {yolo.backend} ({yolo.precision}) on {yolo.device}, input {yolo.input_hw[0]}x{yolo.input_hw[1]}, "
          f"{args.fps_runs} runs")
    for key in ("pre_ms", "forward_ms", "post_ms", "total_ms"):
        print(f"  {key[:-3]:<8} {ms[key]:8.2f} ms")
    print(f"  FPS      {ms['fps']:8.2f}")
    write_bytes_atomic(out / "fps.json", json.dumps({**ms, "backend": yolo.backend, "precision": yolo.precision},
                                                    indent=1).encode())


def export(yolo, args) -> None:
    """--export-onnx: the raw graph, the graph with NMS, or (--int8) the quantized raw graph."""
    calibration = None
    if args.int8:
        calibration = calibration_images(args.data, args.split, yolo.class_names, args.calib_images,
                                         **data_options(args))
    path = yolo.export_onnx(args.export_onnx, nms=args.export_onnx_nms, calibration_images=calibration)
    kind = (f"int8 raw head outputs, calibrated on {len(calibration)} images" if args.int8 else
            "with decoding and NMS" if args.export_onnx_nms else "raw head outputs, checked against torch")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {kind})")


def run(args) -> None:
    if not (args.img or args.dir or args.video or args.export_onnx or args.fps):
        raise UserError("nothing to do: give --img, --dir, --video, --fps or --export-onnx (see --help)")
    if args.img and Path(args.img).is_dir():
        raise UserError(f"--img {args.img} is a folder; give an image file, or --dir {args.img} for every image in it")
    if args.img and not Path(args.img).is_file():
        raise UserError(f"--img {args.img}: file does not exist")
    if args.int8 and (not args.export_onnx or args.export_onnx_nms):
        raise UserError("--int8 quantizes the raw graph: use it with --export-onnx PATH and without --export-onnx-nms")
    if args.cam_top < 0:
        raise UserError(f"--cam-top {args.cam_top}: give the number of detections to explain, or 0 for all")
    yolo = build_yolo(args)
    if args.cam:
        cam_layers(yolo.cam_detector().model, args.cam_layer)  # a bad layer or an .onnx file fails here, once
    amp_note = f"--amp {args.amp}" if yolo.backend == "torch" else "--amp applies to the torch backend only"
    print(f"backend {yolo.backend} on {yolo.device}, precision {yolo.precision} ({amp_note})")
    if args.export_onnx:
        export(yolo, args)
        return
    out = output_dir(args.out)
    if args.fps:
        run_fps(yolo, args, out)
        return
    if args.video:
        counts = predict_video(yolo, args.video, out, args)
    else:
        counts = predict_images(yolo, [Path(args.img)] if args.img else list_images(Path(args.dir)), out, args)
    if args.count:
        print("total: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no objects"))
    print(f"results in {out}")


def main(argv=None) -> int:
    """predict.py with `argv` (default: the command line); returns the exit code (utils/core/cli.py)."""
    return run_main("predict.py", lambda: run(make_parser().parse_args(argv)), memory_hint="use a smaller --input-size")


if __name__ == "__main__":
    sys.exit(main())
