"""Writing files atomically: a temporary file beside the target, renamed over it when complete.

A kill or a full disk mid-write leaves the previous file (or none) at the path, never half a file.
The temporary files are named `.NAME.PID.XXXXXXXX.tmp` (PID: the writing process); a SIGKILL can leave one
behind, which `remove_stale_temporaries` deletes the next time a run starts in that folder, unless its
process still runs (another run's write in flight). Names without a PID are from older versions.

Reading JSON: `read_json` turns every parse failure, a file nested too deep included, into a ValueError
naming the file. A full disk while writing is raised as OSError(ENOSPC) naming the path, which
utils/core/cli.py prints as one line.
"""
import errno
import json
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from utils.core.folder_lock import pid_alive


TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # mkstemp's 8 random characters
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# torch.save's RuntimeErrors when a write came up short, as it does when the disk fills mid-checkpoint
_TORCH_SHORT_WRITE = ("unexpected pos", "PytorchStreamWriter failed writing")
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


def is_disk_full(error: BaseException) -> bool:
    """True for the errors a write raises when the disk (or the user's quota) is full."""
    if isinstance(error, OSError):
        return error.errno in DISK_FULL
    return isinstance(error, RuntimeError) and any(m in str(error) for m in _TORCH_SHORT_WRITE)


def _temporary_beside(path: Path):
    """(fd, name) of a new temporary file in path's folder; an OSError names the folder, not the temporary."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as e:
        if e.errno is None or not e.filename or Path(e.filename).parent != path.parent:
            raise
        raise type(e)(e.errno, e.strerror, str(path.parent)) from None


@contextmanager
def atomic_open(path, mode: str = "wb", fsync: bool = False, **kwargs):
    """Open a temporary file beside `path` for writing; it replaces `path` when the block ends cleanly.
    A full disk raises OSError(ENOSPC) naming `path`, whatever the writer raised, and leaves nothing behind."""
    path = Path(path)
    fd, tmp = _temporary_beside(path)
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
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(e):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
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


def read_json(path):
    """The parsed JSON file `path` (UTF-8, -16 or -32). ValueError naming the file when it is not JSON or is
    nested deeper than Python's parser can follow (a hostile file can be); OSError when it cannot be read."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError(f"{path}: not readable JSON: nested too deeply (deeper than Python's parser follows, "
                         f"about {sys.getrecursionlimit()} levels)") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path}: not valid JSON ({e})") from None
