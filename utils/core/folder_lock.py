"""One process at a time in a run folder: a lock file that names its holder.

`FolderLock(folder)` takes `folder/.train.lock` and writes its holder into it (pid, host, start time); a
second process that asks for the same folder gets FolderInUse, one line naming the holder. Where the OS has
`fcntl.flock` (Linux, macOS) the kernel releases the lock when its holder dies, however it dies; elsewhere the
file is created with O_EXCL and one whose pid is no longer alive on this host counts as left behind. A lock
left behind is taken over with a note. `pid_alive` also tells the temporary files of live writers from those
a killed one left (utils/core/fileio.py).
"""
import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from utils.core.cli import UserError

try:
    import fcntl
except ImportError:  # Windows: O_EXCL and the recorded pid
    fcntl = None

LOCK_NAME = ".train.lock"


class FolderInUse(UserError):
    """Another live process holds the run folder."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (True where that cannot be told: not POSIX)."""
    if pid <= 0:
        return False
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def describe_holder(holder: dict) -> str:
    """'pid 123 on host h since 2026-12-07 05:40:00 UTC' from the lock file's record."""
    if not holder.get("pid"):
        return "another process (its lock file names none yet)"
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("started", 0)))
    return f"pid {holder['pid']} on host {holder.get('host', '?')} since {since}"


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _write_holder(fd: int) -> None:
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(record).encode("utf-8"))


class FolderLock:
    """`with FolderLock(folder):` this process alone runs in `folder` until the block ends."""

    def __init__(self, folder):
        self.path = Path(folder) / LOCK_NAME
        self.fd: Optional[int] = None
        self.note: Optional[str] = None  # set when a lock left behind was taken over

    def __enter__(self) -> "FolderLock":
        try:
            self.fd = self._take_flock() if fcntl else self._take_exclusive()
        except OSError as e:
            raise UserError(f"cannot lock the run folder: {self.path}: {e.strerror or e}; the run folder must be "
                            "writable") from None
        _write_holder(self.fd)
        if self.note:
            print(self.note)
        return self

    def _refuse(self, holder: dict):
        return FolderInUse(f"run folder {self.path.parent} is in use by {describe_holder(holder)} (lock file "
                           f"{self.path}); wait for that run to end or stop it, or use another run folder")

    def _left_behind(self, holder: dict) -> None:
        if holder.get("pid"):
            self.note = (f"took over {self.path}: its holder, {describe_holder(holder)}, is no longer running")

    def _take_flock(self) -> int:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise self._refuse(holder) from None
            try:  # the file may have been removed by its holder's release between our open and flock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._left_behind(_read_holder(fd))
                return fd
            os.close(fd)

    def _take_exclusive(self) -> int:
        for _ in range(2):
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                with open(self.path, "rb") as f:
                    holder = _read_holder(f.fileno())
            if holder.get("host") == socket.gethostname() and not pid_alive(int(holder.get("pid") or 0)):
                self._left_behind(holder)
                self.path.unlink(missing_ok=True)
                continue
            raise self._refuse(holder)
        raise self._refuse({})

    def __exit__(self, *exc) -> None:
        if self.fd is None:
            return
        if fcntl:  # remove the file while still holding it, so no one locks a file about to vanish
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
        else:
            os.close(self.fd)
            self.path.unlink(missing_ok=True)
        self.fd = None
