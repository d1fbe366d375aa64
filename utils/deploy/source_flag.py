"""predict.py --source, ultralytics' flag: which of this project's flags (--dir, --video, --img) a source stands for."""
from pathlib import Path

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")


def source_flag(source: str) -> str:
    """'dir' for a folder; 'video' for a camera index, a stream URL (rtsp://, http://, ...) or a video file (by its
    suffix); 'img' for anything else."""
    if Path(source).is_dir():
        return "dir"
    if source.isdigit() or "://" in source or Path(source).suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    return "img"
