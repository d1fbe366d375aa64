"""Where predict's frames come from: a video file, a camera index (0, 1, ...) or a stream URL (rtsp://, rtmp://,
http://, https://), read by OpenCV (cv2.VideoCapture).

OpenCV's own warnings on a failed open (printed from C++, e.g. "can't open camera by index") are silenced while
it opens, so a bad source gives our one-line error alone. A live source (a camera or a stream) whose read fails
is reopened with a warning, up to `reconnect` times, RECONNECT_WAIT_S apart; a file's end ends its frames."""
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

import cv2
import numpy as np

from utils.core.cli import UserError

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")
RECONNECT_WAIT_S = 1.0  # seconds between two tries at reopening a dropped stream


def is_stream(source: Union[str, int, Path]) -> bool:
    """A URL OpenCV reads as a stream (STREAM_SCHEMES, any case)."""
    return str(source).lower().startswith(STREAM_SCHEMES)


def is_camera(source: Union[str, int, Path]) -> bool:
    return isinstance(source, int) or str(source).isdigit()


def source_name(source: Union[str, int, Path]) -> str:
    """The name of a source's outputs: camera<N>, a file's stem, or for a URL its last path part (else its host)
    with characters other than letters, digits, '-' and '_' replaced by '_'."""
    if is_camera(source):
        return f"camera{source}"
    if not is_stream(source):
        return Path(source).stem
    rest = str(source).split("://", 1)[1].split("?", 1)[0].rstrip("/")
    parts = rest.split("/")
    last = Path(parts[-1]).stem if len(parts) > 1 else parts[0].split("@")[-1]
    return re.sub(r"[^A-Za-z0-9_-]", "_", last) or "stream"


@contextmanager
def quiet_opencv():
    """OpenCV's log level silent for the block (its C++ warnings go straight to stderr), then as it was."""
    logging = cv2.utils.logging
    before = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(before)


def open_capture(source: str):
    """cv2.VideoCapture of a camera index (digits), a file or a URL, opened quietly (see quiet_opencv)."""
    with quiet_opencv():
        return cv2.VideoCapture(int(source) if is_camera(source) else source)


def _read(cap) -> Optional[np.ndarray]:
    """The next BGR frame, or None when the read fails."""
    with quiet_opencv():
        ok, frame = cap.read()
    return frame if ok and frame is not None else None


class VideoSource:
    """The BGR frames of a file, a camera or a stream: opened at once (UserError when it cannot be opened or gives
    no frame); a live source that drops is reopened up to `reconnect` times (0: never)."""

    def __init__(self, source: str, reconnect: int = 0):
        self.source, self.reconnect = str(source), reconnect
        self.live = is_camera(self.source) or is_stream(self.source)
        if not self.live and not Path(self.source).is_file():
            raise UserError(f"--video {self.source}: file does not exist (give a video file, a camera index such "
                            "as 0, or a stream URL: rtsp://, http://, https://)")
        self.cap = open_capture(self.source)
        self.first = _read(self.cap) if self.cap.isOpened() else None
        if self.first is None:
            self.cap.release()
            kind = ("no such camera, or it is in use" if is_camera(self.source) else
                    "the stream did not answer or gave no frame" if self.live else
                    "not a video, an unsupported codec, or no frames")
            raise UserError(f"--video {self.source}: cannot be opened or holds no readable frames ({kind})")
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
        self.name = source_name(self.source)

    @property
    def size(self):
        """(width, height) of the frames."""
        return self.first.shape[1], self.first.shape[0]

    def _finite_end(self) -> bool:
        """A URL may serve a file: its end (every frame the open capture counts read) is not a drop. The capture's
        own position, not the frames of every session: a file served again after a drop counts from 0."""
        total = self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0
        return total > 0 and (self.cap.get(cv2.CAP_PROP_POS_FRAMES) or 0) >= total

    def _reopen(self, done: int) -> Optional[np.ndarray]:
        """After a failed read of a live source: reopen it, warning each try; its first frame, or None when every
        try failed."""
        if not self.reconnect:
            print(f"warning: --video {self.source}: the stream dropped after {done} frames; stopping (--reconnect 0)",
                  file=sys.stderr)
            return None
        for attempt in range(1, self.reconnect + 1):
            print(f"warning: --video {self.source}: the stream dropped after {done} frames; reopening "
                  f"(try {attempt} of {self.reconnect}, {RECONNECT_WAIT_S:g} s apart)", file=sys.stderr)
            self.cap.release()
            time.sleep(RECONNECT_WAIT_S)
            self.cap = open_capture(self.source)
            frame = _read(self.cap) if self.cap.isOpened() else None
            if frame is not None:
                return frame
        print(f"warning: --video {self.source}: could not be reopened ({self.reconnect} tries, see --reconnect); "
              f"stopping after {done} frames", file=sys.stderr)
        return None

    def frames(self, max_frames: int = 0) -> Iterator[np.ndarray]:
        """The BGR frames from the first, at most max_frames (0: all)."""
        frame, done = self.first, 0
        while frame is not None:
            yield frame
            done += 1
            if max_frames and done >= max_frames:
                return
            frame = _read(self.cap)
            if frame is None and self.live and not self._finite_end():
                frame = self._reopen(done)

    def release(self) -> None:
        self.cap.release()
