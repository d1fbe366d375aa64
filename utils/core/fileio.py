"""Writing files atomically: a temporary file beside the target, renamed over it when complete.

A kill or a full disk mid-write leaves the previous file (or none) at the path, never half a file.
The temporary files are named `.NAME.PID.XXXXXXXX.tmp` (PID: the writing process); a SIGKILL can leave one
behind, which `remove_stale_temporaries` deletes the next time a run starts in that folder, unless its
process still runs (another run's write in flight). Names without a PID are from older versions.
"""
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

from utils.core.folder_lock import pid_alive


TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # mkstemp's 8 random characters
_OWNED_TEMP_NAME = re.compile(r"\..+\.(\d+)\.[a-z0-9_]{8}\.tmp")  # ... after the writer's pid


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _writer_alive(temp_name: str) -> bool:
    owned = _OWNED_TEMP_NAME.fullmatch(temp_name)
    return bool(owned) and pid_alive(int(owned.group(1)))


def remove_stale_temporaries(folder) -> list:
    """Delete the temporary files that an atomic write killed mid-way left in `folder`; returns their paths.
    A file whose writer (the pid in its name) is alive on this host is another process's write in flight: kept."""
    stale = [p for p in Path(folder).glob(f".*{TEMP_SUFFIX}")
             if _TEMP_NAME.fullmatch(p.name) and p.is_file() and not _writer_alive(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


@contextmanager
def atomic_open(path, mode: str = "wb", fsync: bool = False, **kwargs):
    """Open a temporary file beside `path` for writing; it replaces `path` when the block ends cleanly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; a finished file gets the usual mode
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text_atomic(path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json_atomic(path, obj, indent=None) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=indent)
