"""What a source names, by one rule for predict.py --source (ultralytics' flag) and YOLO.predict: a folder of
images, an image file, or a video (a camera index, a stream URL or any other file)."""
from pathlib import Path
from typing import Union

from utils.deploy.video_source import is_camera, is_stream
from utils.ops.image import IMAGE_EXTENSIONS


def source_kind(source: Union[str, int, Path]) -> str:
    """'video' for a camera index or a stream URL (rtsp://, http://, ...); 'dir' for a folder; 'img' for a file
    name with an image suffix; 'video' for any other file (OpenCV reads more video formats than a list could
    name). The name of the predict.py flag that takes it."""
    if is_camera(source) or is_stream(source):
        return "video"
    path = Path(source)
    if path.is_dir():
        return "dir"
    return "img" if path.suffix.lower() in IMAGE_EXTENSIONS else "video"
