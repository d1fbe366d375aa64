"""What every script shares: the one exit-code rule, the error wrapper around `main`, and shared help texts.

Exit codes of every script and module command (train.py, predict.py, get_map.py, ablate.py,
python -m utils.data.anchors, python -m utils.deploy.quantize, python -m nets.summary):
  0    done
  1    bad input (a flag, a missing or unreadable file, a dataset that does not fit) or a failure
       (training diverged, a full disk, a folder it may not write in, out of memory); one line on stderr
       says what and what to do
  130  interrupted (Ctrl-C)
"""
import errno
import sys
from typing import Callable, Mapping, Optional

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem with the command line or the files it names: printed as one line, exit code 1."""


# Exceptions that mean bad input or a known failure: one line, no traceback. DatasetError and
# ImageReadError are ValueErrors. Anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (UserError, FileNotFoundError, ValueError)
# what the machine refused: a full disk, a folder it may not write in (OSError), and RAM
MACHINE_ERRORS = (OSError, MemoryError, RuntimeError)
MEMORY_HINT = "lower --batch-size"
_CPU_OUT_OF_MEMORY = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory",
                      "is killed by signal: Killed")  # the last: a DataLoader worker the kernel killed for RAM
_NO_WRITE = (errno.EACCES, errno.EPERM, errno.EROFS)


def machine_error_line(error: BaseException, memory_hint: str = MEMORY_HINT) -> Optional[str]:
    """The one line for an error of the machine (MACHINE_ERRORS), or None for one that is a bug."""
    if isinstance(error, MemoryError) or any(m in str(error) for m in _CPU_OUT_OF_MEMORY):
        found = f" ({str(error).strip().splitlines()[0]})" if str(error).strip() else ""
        return f"out of memory (RAM){found}; {memory_hint}, or close other programs"
    if not isinstance(error, OSError):
        return None
    where = error.filename if error.filename is not None else "?"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"the disk is full at {where} ({error.strerror}): nothing was written there; free some space or "
                "write elsewhere, and run again")
    if error.errno in _NO_WRITE:
        return (f"cannot write at {where} ({error.strerror}): write to a folder you may write in "
                "(--out, --save-dir) or change its permissions")
    return f"{where}: {error.strerror}" if error.strerror and error.filename is not None else str(error)


def run_main(prog: str, body: Callable[[], Optional[int]], failures: tuple = (), interrupted: str = "",
             memory_hint: str = MEMORY_HINT) -> int:
    """Run a script's `body` (parsing included) under the exit-code rule above; returns the exit code.

    `failures`: more exception types that end the run with a one-line message and exit code 1;
    `interrupted`: what to do after Ctrl-C, said after "interrupted"; `memory_hint`: what to do when
    RAM runs out.
    """
    try:
        code = body()
    except SystemExit as e:  # argparse: --help (0) or a usage error it has printed (2)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        return EXIT_OK if e.code in (None, 0) else EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted{': ' + interrupted if interrupted else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except EXPECTED_ERRORS + tuple(failures) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except MACHINE_ERRORS as e:
        line = machine_error_line(e, memory_hint)
        if line is None:
            raise
        print(f"{prog}: error: {line}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK if code is None else int(code)


def choices_help(names: Mapping[int, str]) -> str:
    """{0: 'none', 1: 'se'} -> '0 none, 1 se': the help text of a flag that takes one of these integers."""
    return ", ".join(f"{key} {name}" for key, name in names.items())
