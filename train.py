"""Train YOLOv4-tiny with pluggable attention: `python train.py --phi 2`.

With no dataset in VOCdevkit it trains on the embedded demo dataset (generated on first use) with a
schedule sized for it. `torchrun --nproc_per_node N train.py ...` trains with DistributedDataParallel.
Exit codes (utils/core/cli.py): 0 done, 1 bad input or training diverged, 130 interrupted (Ctrl-C).
"""
import argparse
import sys
from pathlib import Path

from utils.core.cli import UserError, run_main
from utils.core.settings import add_flags
from utils.engine.recipes import config_defaults
from utils.engine.resume import explicit_flags

# torch, the model and the data are imported by `train` (utils/engine/run.py), so that --help and flag errors
# are quick: tests/test_first_hour.py checks that --help imports no torch
ROOT = Path(__file__).resolve().parent


def make_parser() -> argparse.ArgumentParser:
    """train.py's flags, generated from the schema (utils/core/settings.py) by concern."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p, "train")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Flags over a --config YAML over the --recipe's values over the parser's defaults (the schema's);
    the file is checked and, when it is a run's record, migrated (utils/engine/recipes.config_defaults)."""
    parser = make_parser()
    args, _ = parser.parse_known_args(argv)
    config = {}
    if args.config:
        from utils.engine.run_logger import read_yaml
        config = read_yaml(args.config)
    given = args.recipe if args.recipe != parser.get_default("recipe") else None
    parser.set_defaults(**config_defaults(config, args.config, given))
    return parser.parse_args(argv)


def train(argv=None) -> int:
    """Parse `argv`, then train (utils/engine/run.py); a run that diverged is one line (exit code 1)."""
    values = vars(parse_args(argv))
    from utils.engine.run import Trainer
    from utils.engine.trainer import TrainingDiverged

    try:
        return Trainer(values, make_parser, explicit_flags(make_parser(), argv)).fit()
    except TrainingDiverged as e:
        raise UserError(str(e)) from None


def main(argv=None) -> int:
    """train.py with `argv` (default: the command line); returns the exit code (utils/core/cli.py)."""
    try:
        return run_main("train.py", lambda: train(argv))
    finally:
        if "utils.engine.distributed" in sys.modules:  # imported once training started
            sys.modules["utils.engine.distributed"].teardown()


if __name__ == "__main__":
    sys.exit(main())
