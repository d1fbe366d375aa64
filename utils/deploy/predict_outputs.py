"""What prediction writes and prints for one image: the output names, the extras chosen by the options
(heatmap, attention maps, CAMs, label files, crops), the per-image lines and the optional window.

`yolo` below is a detector with the methods of yolo.YOLO (detect, draw, heatmap, cam, attention_maps,
class_names); this module does not import it (yolo.py is above the library)."""
import os
import sys
from collections import Counter
from dataclasses import field, fields
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np

from utils.core.fileio import write_bytes_atomic, write_json_atomic
from utils.core.settings import check_overrides, nearest, settings_class, tool_settings
from utils.deploy.attention_maps import save_attention_maps
from utils.deploy.cam import cam_grid
from utils.deploy.drawing import labelled_heat, save_image
from utils.deploy.tracking import TrackWriter, draw_tracks
from utils.eval.coco_results import coco_result_rows

# the options that write a file per image besides the annotated image, so need an output folder
FILE_OUTPUTS = ("heatmap", "attention_map", "cam", "save_txt", "save_json", "crop")
OBJECTNESS_TITLE = "objectness: highest of any anchor, P5 and P4 heads"


def _check(self) -> None:
    if self.cam_top < 0:
        raise ValueError(f"--cam-top {self.cam_top}: give the number of detections to explain, or 0 for all")
    if self.max_frames < 0:
        raise ValueError(f"--max-frames {self.max_frames}: give a number of frames, or 0 for all")
    if self.reconnect < 0:
        raise ValueError(f"--reconnect {self.reconnect}: give the number of tries at reopening a stream, or 0")
    if not 0.0 <= self.track_thresh <= 1.0:
        raise ValueError(f"--track-thresh {self.track_thresh}: expected a score between 0 and 1")


def _from_mapping(cls, values: dict):
    """The options named in `values` (e.g. a script's parsed flags as a dict); other keys are ignored."""
    return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


def _from_keywords(cls, **values):
    """The options given as keywords, checked against the schema: an unknown name is refused with the nearest
    valid one, a value of the wrong type or not among the choices naming the setting."""
    valid = [f.name for f in fields(cls)]
    for name in values:
        if name not in valid:
            raise ValueError(f"unknown predict option {name!r}{nearest(name, valid)}; valid: {', '.join(valid)}")
    return cls(**check_overrides(values, "predict options", tool="predict", allowed=("verbose",)))


def _needs_folder(self) -> List[str]:
    """The options set that write files, which need an output folder."""
    return [name for name in FILE_OUTPUTS if getattr(self, name)]


# What predict writes and prints besides the annotated image: the schema's "outputs" and "maps" settings of
# predict.py (utils/core/schema_tools.py: name, type, default and help), plus verbose (one line per image and
# detection; predict.py always prints them). Frozen; e.g. PredictOutputs(save_txt=True, cam=True, cam_top=3).
PredictOutputs = settings_class(
    "PredictOutputs", tool_settings("predict", ("outputs", "maps")), tool="predict",
    extra=[("verbose", bool, field(default=True))],
    namespace={"__post_init__": _check, "from_mapping": classmethod(_from_mapping),
               "from_keywords": classmethod(_from_keywords), "needs_folder": _needs_folder})


def numbered_folder(base: Path) -> Path:
    """base/exp1, base/exp2, ...: the first that does not exist yet (not created)."""
    n = 1
    while (base / f"exp{n}").exists():
        n += 1
    return base / f"exp{n}"


def output_names(paths) -> Dict[Path, str]:
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


def as_array(det) -> np.ndarray:
    """Detections -> float [K, 6]: x1, y1, x2, y2, score, class id."""
    return np.column_stack([det.boxes, det.scores, det.class_ids]).reshape(-1, 6)


def describe(det, names, label: str) -> None:
    """Print how many detections `label` has, then one line per detection: class, score, box."""
    if not len(det):
        print(f"{label}: no detections")
        return
    print(f"{label}: {len(det)} detections")
    for box, score, cls in zip(det.boxes, det.scores, det.class_ids):
        x1, y1, x2, y2 = (round(float(v), 1) for v in box)
        print(f"  {names[cls]} {score:.3f} [{x1}, {y1}, {x2}, {y2}]")


def format_counts(counts: Counter) -> str:
    """'car 2, person 1' (sorted by name), or '' for none."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def no_display() -> bool:
    """True on Linux without an X or Wayland display, where a GUI OpenCV's window (Qt) aborts the process."""
    return sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class Shower:
    """cv2.imshow when enabled, OpenCV has a GUI and there is a display; otherwise says so once and does nothing."""

    def __init__(self, enabled: bool, out: Optional[Path]):
        self.enabled, self.out = enabled, out

    def _off(self, why: str) -> None:
        where = f"results are in {self.out}" if self.out else "no window is shown"
        print(f"--show: no window support here: {why}; {where}.")
        self.enabled = False

    def __call__(self, rgb: np.ndarray, wait: int = 0) -> None:
        if not self.enabled:
            return
        if no_display():
            return self._off("no display (DISPLAY and WAYLAND_DISPLAY are unset)")
        try:
            cv2.imshow("predict", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            cv2.waitKey(wait)
        except cv2.error:
            self._off("this OpenCV build has none (opencv-python-headless); install opencv-python instead of the "
                      "headless build to see windows")


def write_maps(yolo, image: np.ndarray, name: str, out: Path, options: PredictOutputs) -> None:
    """The per-image maps chosen: objectness heatmap, CAMs, attention maps."""
    if options.heatmap:
        save_image(out / f"{name}_heatmap.jpg", labelled_heat(yolo.heatmap(image), OBJECTNESS_TITLE, "0", "1"))
    if options.cam:
        cams = yolo.cam(image, options.cam_method, options.cam_layer, options.cam_top)
        if cams:
            save_image(out / f"{name}_cam.jpg", cam_grid(image, cams, yolo.class_names))
        else:
            print(f"{name}: no detections, so no CAM")
    if options.attention_map:
        maps = yolo.attention_maps(image)
        if not maps:
            print(f"{name}: the model has no attention block with a map to show")
        save_attention_maps(out, name, image, maps)


def write_extras(yolo, image: np.ndarray, det, name: str, out: Path, options: PredictOutputs) -> None:
    """The per-image outputs chosen by the options: maps, labels txt, crops."""
    names = yolo.class_names
    write_maps(yolo, image, name, out, options)
    if options.save_txt:
        lines = [f"{names[c]} {s:.5f} {b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}"
                 for b, s, c in zip(det.boxes, det.scores, det.class_ids)]
        write_bytes_atomic(out / "labels" / f"{name}.txt", "".join(line + "\n" for line in lines).encode())
    if options.crop:
        for i, (box, cls) in enumerate(zip(det.boxes, det.class_ids)):
            x1, y1, x2, y2 = np.round(box).astype(int)
            if x2 > x1 and y2 > y1:
                save_image(out / "crops" / names[cls] / f"{name}_{i}.jpg", image[y1:y2, x1:x2])


class VideoOutputs:
    """What predict writes for a video under `out` (nothing when `out` is None): <name>.mp4 annotated (mp4v); per
    frame the extras the options choose, named <name>_<frame> (labels/<name>_<frame>.txt, crops, maps; frames
    count from 0); detections.json, one COCO results list whose rows also hold `frame` (and `track_id` with
    tracking), image_id <name>_<frame>; with tracking, tracks.csv. The video and tracks.csv grow under hidden
    partial names and take their names in close() (also after Ctrl-C or a dropped stream)."""

    def __init__(self, yolo, out: Optional[Path], name: str, fps: float, size, options: PredictOutputs):
        self.yolo, self.out, self.name, self.options, self.rows = yolo, out, name, options, []
        self.writer = self.tracks = None
        if out is not None:
            self.final, self.partial = out / f"{name}.mp4", out / f".{name}.partial.mp4"
            self.writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
            if options.track:
                self.tracks = TrackWriter(out / "tracks.csv", yolo.class_names)

    def draw(self, rgb: np.ndarray, det) -> Optional[np.ndarray]:
        """The annotated frame (track ids drawn when `det` has them), or None when nothing needs it."""
        if self.writer is None and not self.options.show:
            return None
        track_ids = getattr(det, "track_ids", None)
        return self.yolo.draw(rgb, det) if track_ids is None else draw_tracks(rgb, det, self.yolo.class_names)

    def write(self, index: int, rgb: np.ndarray, det, drawn: Optional[np.ndarray]) -> None:
        if self.out is None:
            return
        self.writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        frame_name = f"{self.name}_{index}"
        write_extras(self.yolo, rgb, det, frame_name, self.out, self.options)
        track_ids = getattr(det, "track_ids", None)
        if self.tracks is not None:
            self.tracks.write(index, det)
        if self.options.save_json:
            rows = coco_result_rows(frame_name, as_array(det), self.yolo.class_names)
            for row, track in zip(rows, track_ids if track_ids is not None else [None] * len(rows)):
                row["frame"] = index
                if track is not None:
                    row["track_id"] = int(track)
            self.rows.extend(rows)

    def close(self) -> Optional[Path]:
        """Give the partial files their names and write detections.json; the video's path."""
        if self.out is None:
            return None
        self.writer.release()
        os.replace(self.partial, self.final)
        if self.tracks is not None:
            self.tracks.close()
        if self.options.save_json:
            write_json_atomic(self.out / "detections.json", self.rows)
        return self.final
