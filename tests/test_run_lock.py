"""Runs that share a folder: one process at a time holds it, and start-up cleans only dead writers' temporaries."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import train
from tests.helpers.samples import run_args
from utils.core import folder_lock
from utils.core.fileio import remove_stale_temporaries
from utils.core.folder_lock import LOCK_NAME, FolderInUse, FolderLock


pytestmark = pytest.mark.usefixtures("scan_cache")

ROOT = Path(__file__).resolve().parents[1]
HOLD = ("import sys; from utils.core.folder_lock import FolderLock\n"
        "with FolderLock(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()\n")


@pytest.fixture
def live_pid():
    """The pid of a process that runs until the test ends."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    yield proc.pid
    proc.stdin.close()
    proc.wait(timeout=30)


@pytest.fixture
def dead_pid():
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_a_second_run_in_a_held_folder_stops_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "exp"
    run.mkdir()
    (run / "last.pth").write_bytes(b"the holder is writing here")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert train.main(["--resume", str(run / "last.pth"), "--quiet", "--workers", "0"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"run folder {run} is in use by pid {holder.pid} on host {socket.gethostname()} since " in err
        assert (run / LOCK_NAME).exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not (run / LOCK_NAME).exists()  # released (and removed) when the holder's run ends


def test_one_process_cannot_take_a_folder_twice(tmp_path):
    with FolderLock(tmp_path):
        with pytest.raises(FolderInUse, match=f"in use by pid {os.getpid()} "):
            FolderLock(tmp_path).__enter__()
    with FolderLock(tmp_path):  # free again
        pass


@pytest.mark.parametrize("flock", [True, False], ids=["flock", "O_EXCL"])
def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_note(tmp_path, dead_pid, live_pid, monkeypatch, capsys,
                                                                 flock):
    if not flock:
        monkeypatch.setattr(folder_lock, "fcntl", None)  # as on an OS without flock
    left = {"pid": dead_pid, "host": socket.gethostname(), "started": time.time() - 60}
    (tmp_path / LOCK_NAME).write_text(json.dumps(left))
    with FolderLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"its holder, pid {dead_pid} on host {socket.gethostname()} since" in capsys.readouterr().out
    if not flock:  # without flock the recorded pid decides: a live one keeps the folder
        (tmp_path / LOCK_NAME).write_text(json.dumps({**left, "pid": live_pid}))
        with pytest.raises(FolderInUse, match=f"in use by pid {live_pid} "):
            FolderLock(tmp_path).__enter__()


@pytest.mark.slow
def test_start_up_removes_only_the_temporaries_of_dead_writers(tiny_voc, tmp_path, live_pid, dead_pid, capsys):
    assert train.main(run_args(tiny_voc, tmp_path, "--epochs", 1, "--eval-period", 0)) == 0
    run = tmp_path / "exp"
    in_flight = run / f".last.pth.{live_pid}.k2j4x_9q.tmp"  # another live process is writing it
    killed = run / f".best.pth.{dead_pid}.a8d0w1zz.tmp"
    for path in (in_flight, killed):
        path.write_bytes(b"part of a checkpoint")
    capsys.readouterr()
    assert train.main(["--resume", str(run / "last.pth"), "--quiet", "--workers", "0"]) == 0  # finished: start-up only
    assert in_flight.exists() and not killed.exists()
    assert f"removed {killed}" in capsys.readouterr().out
    assert remove_stale_temporaries(run) == [] and in_flight.exists()
