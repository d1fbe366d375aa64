"""Detect objects in an image, a folder, a video or a camera; benchmark speed; export ONNX.

    python predict.py --img img/street.jpg                  # annotated image + one line per detection
    python predict.py --dir img/ --save-json --crop --count
    python predict.py --video clip.mp4                      # or --video 0 for the first camera
    python predict.py --video rtsp://host/stream --track    # a stream; track ids drawn, tracks.csv
    python predict.py --fps --backend onnx                  # ms for pre, forward, post and FPS
    python predict.py --img big.jpg --slice 320 --overlap 0.2   # small objects: tiles, merged (SAHI)
    python predict.py --export-onnx model.onnx [--export-onnx-nms]
    python predict.py --export-onnx model_int8.onnx --int8 [--data VOCdevkit --calib-images 100]
    python predict.py --weights model_int8.onnx --img a.jpg        # an exported graph, run by ONNX Runtime
    python predict.py --weights yolov4-tiny.weights --classes model_data/coco_classes.txt --img a.jpg
    python predict.py --img a.jpg --cam [--cam-method layercam --cam-layer feat1 --cam-top 4]   # <name>_cam.jpg

Outputs go to --out (default: a new numbered folder out/predict/exp1, exp2, ...); the precision in use
(--amp) is printed at start. Nothing opens a window unless --show is given. Exit codes (utils/core/cli.py):
0 done, 1 bad input (one line on stderr), 130 interrupted. The modes live in utils/deploy/predict_modes.py.
"""
import argparse
import sys
from collections import Counter
from pathlib import Path

from utils.core.amp import set_threads
from utils.core.cli import UserError, run_main
from utils.core.settings import add_flags

# torch, the model and the modes are imported where used: --help and flag errors are quick (tests/test_first_hour.py)
ROOT = Path(__file__).resolve().parent
COCO_CLASSES = ROOT / "model_data" / "coco_classes.txt"


# predict.py's flag groups: what to run, then each mode's flags; every flag is its schema entry (utils/core/settings.py)
FLAG_GROUPS = (
    ("what to run (one of)", ("img", "dir", "video", "source", "export_onnx")),
    ("outputs of --img, --dir and --video", ("out", "save_txt", "save_json", "crop", "count", "max_frames", "show")),
    ("video, camera and stream (--video)", ("track", "track_thresh", "reconnect")),
    ("maps, per image", ("heatmap", "attention_map", "cam", "cam_method", "cam_layer", "cam_top")),
    ("speed (--fps)", ("fps", "fps_runs", "warmup")),
    ("export (--export-onnx)", ("export_onnx_nms", "int8", "data", "split", "data_format", "images", "calib_images")),
    ("model", ("weights", "logs", "classes", "phi", "attention", "input_size", "scale_x_y", "backend", "amp",
               "device", "threads")),
    ("detection", ("conf", "nms", "max_det", "letterbox", "agnostic_nms")),
    ("sliced inference for small objects (--slice)", ("slice", "overlap", "slice_full")),
)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for title, names in FLAG_GROUPS:
        add_flags(p.add_argument_group(title), "predict", names=names)
    return p


def build_yolo(args):
    """The detector (yolo.YOLO) the model flags name: --weights (default: the newest best.pth under --logs, else its
    newest last.pth or interrupted.pth; the file loaded is printed) and overrides."""
    from utils.deploy.predict_modes import find_weights
    from yolo import YOLO

    weights, why = find_weights(args.weights, args.logs)
    print(f"weights {weights} ({why})")
    classes = args.classes or (str(COCO_CLASSES) if weights.suffix == ".weights" else None)
    return YOLO(weights, classes=classes, attention=args.attention if args.attention is not None else args.phi,
                input_size=args.input_size, conf=args.conf, nms=args.nms,
                letterbox=args.letterbox, device=args.device, backend=args.backend, max_det=args.max_det,
                scale_x_y=args.scale_x_y, amp=args.amp, agnostic_nms=args.agnostic_nms, slice=slicing_of_args(args))


def slicing_of_args(args):
    """--slice, --overlap and --slice-full as YOLO's `slice` (None without --slice); ValueError when out of range."""
    from utils.ops.slicing import flag_slicing

    return flag_slicing(args.slice, args.overlap, args.slice_full)


def check_args(args) -> None:
    """One line for flags that do not fit together or name no file."""
    from utils.deploy.predict_modes import INT8_RAW_ONLY
    from utils.deploy.source_flag import source_kind

    if args.source is not None:  # ultralytics' --source: as --dir, --video or --img
        setattr(args, source_kind(args.source), args.source)
    if not (args.img or args.dir or args.video or args.export_onnx or args.fps):
        raise UserError("nothing to do: give --img, --dir, --video, --fps or --export-onnx (see --help)")
    if args.img and Path(args.img).is_dir():
        raise UserError(f"--img {args.img} is a folder; give an image file, or --dir {args.img} for every image in it")
    if args.img and not Path(args.img).is_file():
        raise UserError(f"--img {args.img}: file does not exist")
    if args.int8 and (not args.export_onnx or args.export_onnx_nms):
        raise UserError(INT8_RAW_ONLY)
    if args.fps and args.slice:
        raise UserError("--fps times one pass over the whole image; it does not time --slice: leave one out")
    if args.track and not args.video:
        raise UserError("--track follows objects across the frames of a video: give --video (a file, a camera "
                        "index or a stream URL)")
    if args.track:
        from utils.deploy.tracking import require_trackers
        require_trackers()  # one line naming what to install, before the model loads


def run(args) -> None:
    from utils.deploy.cam import cam_layers
    from utils.deploy.predict_modes import export_model, list_images, predict_images, predict_video, report_speed
    from utils.deploy.predict_outputs import PredictOutputs, format_counts, numbered_folder
    from utils.ops.image import read_image

    check_args(args)
    set_threads(args.threads)
    options = PredictOutputs.from_mapping(vars(args))  # the Namespace stops here
    yolo = build_yolo(args)
    if args.cam:
        cam_layers(yolo.cam_detector().model, args.cam_layer)  # a bad layer or an .onnx file fails here, once
    amp_note = f"--amp {args.amp}" if yolo.backend != "onnx" else "--amp applies to the torch and openvino backends"
    print(f"backend {yolo.backend} on {yolo.device}, precision {yolo.precision} ({amp_note})")
    if args.export_onnx:
        path, kind = export_model(yolo, args.export_onnx, args.export_onnx_nms, args.int8, args.data, args.split,
                                  args.calib_images, data_format=args.data_format, images_dir=args.images)
        print(f"wrote {path.resolve()} ({path.stat().st_size / 1e6:.1f} MB, {kind})")
        return
    out = Path(args.out) if args.out else numbered_folder(ROOT / "out" / "predict")
    out.mkdir(parents=True, exist_ok=True)
    if args.fps:
        report_speed(yolo, read_image(args.img) if args.img else None, args.fps_runs, args.warmup, out)
        return
    if args.video:
        found = predict_video(yolo, args.video, out, options)
    else:
        found = predict_images(yolo, [Path(args.img)] if args.img else list_images(Path(args.dir)), out, options)
    if args.count:
        names = yolo.class_names
        counts = Counter(names[c] for _, det in found for c in det.class_ids)
        print("total: " + (format_counts(counts) or "no objects"))
    print(f"results in {out}")


def main(argv=None) -> int:
    """predict.py with `argv` (default: the command line); returns the exit code (utils/core/cli.py)."""
    return run_main("predict.py", lambda: run(make_parser().parse_args(argv)), memory_hint="use a smaller --input-size")


if __name__ == "__main__":
    sys.exit(main())
