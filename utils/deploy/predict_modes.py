"""Prediction's modes as library functions, used by predict.py and yolo.YOLO.predict / YOLO.export:
images and folders (predict_images), videos, cameras and streams, with tracking (predict_video), any of them by
what a source is (predict_source), speed (report_speed) and ONNX export with int8 calibration (export_model).

`yolo` is a detector with yolo.YOLO's methods (this module does not import yolo.py, which is above it). Each
function takes plain values and a PredictOutputs; `out` None writes no file. Results are (key, Detections)
pairs in order: the image path for images, the frame index for videos."""
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import List, Optional, Tuple, Union

import cv2
import numpy as np

from utils.core.cli import UserError
from utils.core.fileio import write_bytes_atomic
from utils.core.paths import LOGS, default_weights
from utils.deploy.drawing import save_image
from utils.deploy.predict_outputs import (PredictOutputs, Shower, VideoOutputs, annotated_name, as_array, describe,
                                          format_counts, image_id, output_names, write_extras)
from utils.deploy.tracking import Tracker, require_trackers
from utils.deploy.video_source import VideoSource, is_camera, is_stream
from utils.deploy.quantize import DEFAULT_CALIB_IMAGES, calibration_images
from utils.deploy.source_flag import source_kind
from utils.eval.detect import write_coco_results
from utils.ops.image import IMAGE_EXTENSIONS, ImageReadError, read_image

Source = Union[str, int, Path]
INT8_RAW_ONLY = "--int8 quantizes the raw graph: use it with --export-onnx PATH and without --export-onnx-nms"


def find_weights(weights, logs=LOGS) -> Tuple[Path, str]:
    """(the weights file to load, why): `weights`, or without it utils.core.paths.default_weights under `logs`
    (the newest best.pth, else the newest last.pth or interrupted.pth); UserError for a folder or a file that
    does not exist."""
    path, why = (Path(weights), "--weights") if weights else default_weights(logs)
    if path.is_dir():
        raise UserError(f"--weights {path} is a folder; give a weights file in it (.pth, .weights or .onnx)")
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    return path, why


def read_or_skip(path: Path, several: bool) -> Optional[np.ndarray]:
    """The image as RGB, or None with a warning when it cannot be read and other images follow."""
    try:
        return read_image(path)
    except ImageReadError as e:
        if not several:
            raise UserError(str(e)) from None
        print(f"warning: skipped {e}", file=sys.stderr)
        return None


def list_images(folder: Path) -> List[Path]:
    """The image files of a folder, sorted by name; files of other types are counted in a note."""
    if not folder.is_dir():
        raise UserError(f"--dir {folder}: folder does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    if len(files) > len(images):
        print(f"note: {len(files) - len(images)} files in {folder} without an image extension were ignored")
    if not images:
        raise UserError(f"--dir {folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return images


def check_outputs(options: PredictOutputs, out: Optional[Path]) -> None:
    """ValueError when options that write files are set without an output folder."""
    wanted = options.needs_folder()
    if out is None and wanted:
        raise ValueError(f"{', '.join(wanted)} write files: give an output folder (out=...)")


def predict_images(yolo, paths: List[Path], out: Optional[Path], options: PredictOutputs) -> List[Tuple[Path, object]]:
    """Detect in every path, writing the annotated image and the extras under `out`; unreadable images are
    skipped with a warning when there are several, and UserError when none could be read."""
    check_outputs(options, out)
    if options.track:
        raise ValueError("track follows objects across the frames of a video: give a video file, a camera or a "
                         "stream, or leave tracking off for images")
    found, show, names = [], Shower(options.show, out), output_names(paths)
    for path in paths:
        image = read_or_skip(path, len(paths) > 1)
        if image is None:
            continue
        det = yolo.detect(image)
        drawn = yolo.draw(image, det) if out is not None or options.show else None
        if out is not None:
            save_image(out / annotated_name(path, names[path]), drawn)
            write_extras(yolo, image, det, names[path], out, options)
        if options.verbose:
            describe(det, yolo.class_names, str(path))
        if options.count:
            class_names = yolo.class_names
            print("  counts: " + (format_counts(Counter(class_names[c] for c in det.class_ids)) or "none"))
        found.append((path, det))
        if drawn is not None:
            show(drawn)
    if not found:
        raise UserError(f"none of the {len(paths)} images in {paths[0].parent} could be read (see the warnings "
                        "above): nothing was detected")
    if options.save_json:
        write_coco_results(out / "detections.json", [as_array(d) for _, d in found],
                           [image_id(names[p]) for p, _ in found], yolo.class_names)
    return found


def predict_video(yolo, source: str, out: Optional[Path], options: PredictOutputs) -> List[Tuple[int, object]]:
    """Detect in every frame of a video file, a camera or a stream URL (utils.deploy.video_source: a dropped stream
    is reopened up to options.reconnect times), with options.track following the objects (utils.deploy.tracking;
    each frame's detections then carry track_ids). With `out`, writes what VideoOutputs says, also after Ctrl-C,
    which keeps the frames done."""
    check_outputs(options, out)
    if options.track:
        require_trackers()  # the line naming what to install comes before the video opens
    video = VideoSource(str(source), options.reconnect)
    tracker = Tracker(video.fps, options.track_thresh) if options.track else None
    outputs = VideoOutputs(yolo, out, video.name, video.fps, video.size, options)
    found, show, start, final = [], Shower(options.show, out), time.perf_counter(), None
    try:
        for i, frame in enumerate(video.frames(options.max_frames)):
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            det = yolo.detect(rgb)
            if tracker is not None:
                det = tracker.update(det)
            found.append((i, det))
            drawn = outputs.draw(rgb, det)
            outputs.write(i, rgb, det, drawn)
            if drawn is not None:
                show(drawn, wait=1)
    except KeyboardInterrupt:
        print("interrupted; keeping the frames done so far")
    finally:
        video.release()
        final = outputs.close()
    seconds = time.perf_counter() - start
    if options.verbose:
        tracks = f", {len({t for _, d in found for t in d.track_ids if t > 0})} tracks" if tracker else ""
        print(f"{final or video.name}: {len(found)} frames, {len(found) / max(seconds, 1e-9):.1f} FPS, "
              f"{sum(len(d) for _, d in found)} detections{tracks}")
    return found


def predict_source(yolo, source: Source, out: Optional[Path], options: PredictOutputs) -> list:
    """Detect in what `source` is: a folder (its images), an image file, a camera index (int or digits) or
    another file (a video), or a stream URL (rtsp://, http://, ...). (key, Detections) pairs as predict_images /
    predict_video return them."""
    kind, path = source_kind(source), Path(source)
    if kind == "dir":
        return predict_images(yolo, list_images(path), out, options)
    if is_camera(source) or is_stream(source):
        return predict_video(yolo, str(source), out, options)
    if not path.is_file():
        raise ValueError(f"{path}: no such file or folder; give an image, a folder of images, a video or a "
                         "camera index")
    return predict_images(yolo, [path], out, options) if kind == "img" else predict_video(yolo, str(path), out, options)


def report_speed(yolo, image: Optional[np.ndarray], runs: int, warmup: int, out: Path) -> dict:
    """Time the whole detect path (yolo.measure_speed), print ms per stage and FPS, write out/fps.json."""
    ms = yolo.measure_speed(image, runs=runs, warmup=warmup)
    print(f"backend {yolo.backend} ({yolo.precision}) on {yolo.device}, input {yolo.input_hw[0]}x{yolo.input_hw[1]}, "
          f"{runs} runs")
    for key in ("pre_ms", "forward_ms", "post_ms", "total_ms"):
        print(f"  {key[:-3]:<8} {ms[key]:8.2f} ms")
    print(f"  FPS      {ms['fps']:8.2f}")
    write_bytes_atomic(out / "fps.json", json.dumps({**ms, "backend": yolo.backend, "precision": yolo.precision},
                                                    indent=1).encode())
    return ms


EXPORT_FORMATS = ("onnx",)


def export_path(weights, export_format: str, nms: bool = False, int8: bool = False) -> Path:
    """Where an export goes without a path given: beside the weights, <stem>.onnx, <stem>_nms.onnx or
    <stem>_int8.onnx; ValueError for a format other than EXPORT_FORMATS."""
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {export_format!r}; valid: {', '.join(EXPORT_FORMATS)}")
    weights = Path(weights)
    suffix = "_int8" if int8 else "_nms" if nms else ""
    return weights.with_name(f"{weights.stem}{suffix}.{export_format}")


def export_destination(path, weights) -> Path:
    """Where an export named `path` goes: a bare file name ('m.onnx') beside the weights it comes from (so that
    exports stay with their run under logs/, not in the working folder); a path with a folder part as given."""
    return Path(weights).parent / path if not os.path.dirname(str(path)) else Path(path)


def export_model(yolo, path, nms: bool = False, int8: bool = False, data=None, split: Optional[str] = None,
                 calib_images: int = DEFAULT_CALIB_IMAGES, data_format: Optional[str] = None,
                 images_dir=None) -> Tuple[Path, str]:
    """Write `yolo` as an ONNX graph at `path`: raw head outputs, with decoding and NMS inside (`nms`), or
    (`int8`) the raw graph quantized with `calib_images` calibration images of `split` of `data`
    (utils.deploy.quantize.calibration_images); a bare file name goes beside the weights (export_destination).
    Returns the path and a few words on what it holds."""
    if int8 and nms:
        raise ValueError(INT8_RAW_ONLY)
    calibration = None
    if int8:
        if data is None:
            raise ValueError("int8 needs calibration images: give the dataset they come from (data=...)")
        calibration = calibration_images(data, split, yolo.class_names, calib_images, data_format=data_format,
                                         images_dir=images_dir)
    written = yolo.export_onnx(export_destination(path, yolo._source), nms=nms, calibration_images=calibration)
    kind = (f"int8 raw head outputs, calibrated on {len(calibration)} images" if int8 else
            "with decoding and NMS" if nms else "raw head outputs, checked against torch")
    return written, kind
