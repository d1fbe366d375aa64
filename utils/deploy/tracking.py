"""Tracking detections across video frames (predict.py --video ... --track): ByteTrack as the `trackers` package
(Roboflow, Apache-2.0; an optional dependency, `pip install trackers`) implements it, after Zhang et al.,
"ByteTrack: Multi-Object Tracking by Associating Every Detection Box", ECCV 2022, https://arxiv.org/abs/2110.06864.

Tracking sits after detection, so it works the same on every backend. A track id is ByteTrack's id + 1 (ids
start at 1, as in MOT files); a box gets one from its track's second frame on (ByteTrack's
minimum_consecutive_frames=2, which keeps one-frame false positives out), -1 until then or when the box matched no
track. tracks.csv holds one row per box with an id: frame (0-based), id, x1, y1, x2, y2 (image pixels), score,
class (its name)."""
import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from utils.core.cli import UserError
from utils.deploy.drawing import draw_detections

INSTALL = "--track needs the trackers package (ByteTrack; it brings supervision): pip install trackers"
CSV_COLUMNS = ("frame", "id", "x1", "y1", "x2", "y2", "score", "class")
LOST_TRACK_FRAMES = 30        # frames at 30 FPS a lost track waits to be found again (ByteTrack's default)
CONSECUTIVE_FRAMES = 2        # frames a new track needs before it has an id (ByteTrack's default)


def require_trackers():
    """The trackers package's ByteTrackTracker; UserError naming what to install when it is missing."""
    try:
        from trackers import ByteTrackTracker
    except ImportError as e:
        raise UserError(f"{INSTALL} ({e})") from None
    return ByteTrackTracker


@dataclass
class TrackedDetections:
    """Detections of one frame with their track ids, best first: boxes float32 [K, 4] xyxy image pixels, scores
    float32 [K], class_ids int64 [K], track_ids int64 [K] (from 1; -1 for a box without a track yet)."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    track_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


class Tracker:
    """ByteTrack over the frames of one video: `update(det)` once per frame, in order. Detections scoring at least
    `track_thresh` start tracks and are matched first; lower ones (down to the detector's --conf) only continue
    tracks (ByteTrack's second stage)."""

    def __init__(self, frame_rate: float, track_thresh: float):
        tracker_class = require_trackers()
        self.tracker = tracker_class(lost_track_buffer=LOST_TRACK_FRAMES, frame_rate=frame_rate,
                                     track_activation_threshold=track_thresh,
                                     minimum_consecutive_frames=CONSECUTIVE_FRAMES,
                                     high_conf_det_threshold=track_thresh)

    def update(self, det) -> TrackedDetections:
        """The frame's detections (boxes, scores, class_ids) with their track ids."""
        import supervision as sv  # installed with trackers, which __init__ imported
        boxes = np.asarray(det.boxes, np.float32).reshape(-1, 4)
        given = sv.Detections(xyxy=boxes, confidence=np.asarray(det.scores, np.float32),
                              class_id=np.asarray(det.class_ids, np.int64))
        result = self.tracker.update(given)
        ids = np.asarray(result.tracker_id, np.int64).reshape(-1)
        order = np.argsort(-np.asarray(result.confidence, np.float32), kind="stable")
        return TrackedDetections(np.asarray(result.xyxy, np.float32).reshape(-1, 4)[order],
                                 np.asarray(result.confidence, np.float32)[order],
                                 np.asarray(result.class_id, np.int64)[order], np.where(ids >= 0, ids + 1, -1)[order])


def draw_tracks(image: np.ndarray, tracked: TrackedDetections, class_names: Sequence[str]) -> np.ndarray:
    """HxWx3 uint8 RGB with the boxes drawn: 'class #id score' in a colour per track id, and boxes without an id
    as 'class score', each in a colour of its own after those of the ids."""
    ids = tracked.track_ids
    top = int(ids.max()) if len(ids) else 0
    labels = [""] * (top + 1 + len(ids))  # label index = track id, then one per box without an id
    colour_ids = ids.copy()
    for i, (track, cls) in enumerate(zip(ids, tracked.class_ids)):
        if track < 0:
            colour_ids[i] = top + 1 + i
            labels[colour_ids[i]] = class_names[int(cls)]
        else:
            labels[track] = f"{class_names[int(cls)]} #{track}"
    return draw_detections(image, tracked.boxes, tracked.scores, colour_ids, labels)


class TrackWriter:
    """tracks.csv written row by row to a hidden partial file beside it, renamed to its name by close() (also
    after Ctrl-C or a dropped stream), so tracks.csv is never half-written."""

    def __init__(self, path: Path, class_names: Sequence[str]):
        self.path, self.class_names = Path(path), class_names
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.file = open(self.partial, "w", newline="", encoding="utf-8")
        self.rows = csv.writer(self.file)
        self.rows.writerow(CSV_COLUMNS)

    def write(self, frame: int, tracked: TrackedDetections) -> None:
        """One row per box with a track id, by id."""
        for i in np.argsort(tracked.track_ids, kind="stable"):
            if tracked.track_ids[i] > 0:
                x1, y1, x2, y2 = (f"{float(v):.1f}" for v in tracked.boxes[i])
                self.rows.writerow((frame, int(tracked.track_ids[i]), x1, y1, x2, y2,
                                    f"{float(tracked.scores[i]):.5f}", self.class_names[int(tracked.class_ids[i])]))

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.partial, self.path)


def read_tracks(path) -> list:
    """tracks.csv back as dicts: frame and id as int, the box and score as float, class as its name."""
    rows = list(csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8"))))
    return [{**r, "frame": int(r["frame"]), "id": int(r["id"]),
             **{k: float(r[k]) for k in ("x1", "y1", "x2", "y2", "score")}} for r in rows]
