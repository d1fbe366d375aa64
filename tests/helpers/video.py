"""Videos the tests make: three coloured squares moving on straight lines over a grey background, a stand-in
detector that finds them by colour, and a stand-in cv2.VideoCapture for streams."""
import cv2
import numpy as np

from yolo import Detections

HW = (96, 128)
SIDE = 14
COLOURS = ((255, 40, 40), (40, 255, 40), (40, 40, 255))  # RGB, one per object
CLASS_IDS = (0, 1, 0)
# start (x, y) and velocity (px per frame): B passes A's path and C's column from the right, 9 px above C
STARTS = ((5, 10), (110, 55), (60, 78))
VELOCITIES = ((4, 1), (-4, 0), (1, 0))


def square_boxes(frame: int) -> np.ndarray:
    """[3, 4] float xyxy of the squares in `frame` (x2, y2 exclusive)."""
    boxes = [(x + vx * frame, y + vy * frame) for (x, y), (vx, vy) in zip(STARTS, VELOCITIES)]
    return np.array([(x, y, x + SIDE, y + SIDE) for x, y in boxes], np.float32)


def square_frame(frame: int) -> np.ndarray:
    """HxWx3 uint8 RGB: the squares of `frame` on grey."""
    image = np.full((*HW, 3), 96, np.uint8)
    for (x1, y1, x2, y2), colour in zip(square_boxes(frame).astype(int), COLOURS):
        image[y1:y2, x1:x2] = colour
    return image


def write_video(path, frames, fps: float = 10.0):
    """Write RGB frames as an mp4v video at `path`; returns the path."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def squares_video(path, frames: int = 20):
    """The moving squares as a video of `frames` frames at `path`."""
    return write_video(path, [square_frame(i) for i in range(frames)])


def find_squares(rgb: np.ndarray):
    """Stand-in detector: the box of each square found by its colour (after the codec's blur), score 0.9,
    class CLASS_IDS; yolo.Detections, the objects in COLOURS order."""
    boxes, classes = [], []
    for colour, cls in zip(COLOURS, CLASS_IDS):
        main = int(np.argmax(colour))
        others = [c for c in range(3) if c != main]
        mask = (rgb[..., main] > 160) & (rgb[..., others[0]] < 120) & (rgb[..., others[1]] < 120)
        ys, xs = np.nonzero(mask)
        if len(xs):
            boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
            classes.append(cls)
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), 0.9, np.float32),
                      np.array(classes, np.int64))


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


class FakeCaptures:
    """Stand-in for cv2.VideoCapture: each open takes the next session, a list of BGR frames read in turn, after
    which reads fail; an open past the sessions is not opened. `opened` records what each open was given.
    `counted`: each session tells its frame count (a URL serving a file), else 0 (a live stream)."""

    def __init__(self, sessions, counted: bool = False):
        self.sessions, self.opened, self.counted = list(sessions), [], counted

    def __call__(self, source, *args):
        self.opened.append(source)
        frames = self.sessions.pop(0) if self.sessions else None
        return _FakeCapture(frames, self.counted)


class _FakeCapture:
    def __init__(self, frames, counted: bool = False):
        self.frames = None if frames is None else list(frames)
        self.count = len(self.frames) if counted and frames is not None else 0
        self.position = 0

    def isOpened(self):
        return self.frames is not None

    def read(self):
        if self.frames:
            self.position += 1
            return True, self.frames.pop(0)
        return False, None

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: 10.0, cv2.CAP_PROP_FRAME_COUNT: float(self.count),
                cv2.CAP_PROP_POS_FRAMES: float(self.position)}.get(prop, 0.0)

    def release(self):
        pass
