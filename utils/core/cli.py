"""What every script shares: the one exit-code rule, the error wrapper around `main`, and shared help texts.

Exit codes of every script and module command (train.py, predict.py, get_map.py, ablate.py,
python -m utils.data.anchors, python -m utils.deploy.quantize, python -m nets.summary):
  0    done
  1    bad input (a flag, a missing or unreadable file, a dataset that does not fit) or a failure
       (training diverged); one line on stderr says what and what to do
  130  interrupted (Ctrl-C)
"""
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


def run_main(prog: str, body: Callable[[], Optional[int]], failures: tuple = (), interrupted: str = "") -> int:
    """Run a script's `body` (parsing included) under the exit-code rule above; returns the exit code.

    `failures`: more exception types that end the run with a one-line message and exit code 1;
    `interrupted`: what to do after Ctrl-C, said after "interrupted".
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
    return EXIT_OK if code is None else int(code)


def choices_help(names: Mapping[int, str]) -> str:
    """{0: 'none', 1: 'se'} -> '0 none, 1 se': the help text of a flag that takes one of these integers."""
    return ", ".join(f"{key} {name}" for key, name in names.items())
