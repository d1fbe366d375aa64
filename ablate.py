"""Compare attention variants under one budget: `python ablate.py --variants 0 1 2 3 4 --epochs 30 --seeds 3`.

Each variant (a phi integer, a block name, or a per-site spec such as feat1=cbam,feat2=se, any of them
with an FPN merge as one more part: enc,fusion=gated; --sweep-sites cbam: phi 0, then cbam at each site in
turn, --pairs at each pair) is trained by `python train.py` in a process of its own with the same data, schedule,
budget and seeds, and its last.pth is scored by utils.eval.scoring with get_map.py's default settings
(conf, NMS, --amp auto, batch size), the path `python get_map.py --weights last.pth` takes. The work is
done by utils/eval/ablation_runs.py; this script parses the flags and draws the CAMs. Differences from the baseline
(the first variant, or --baseline) get 95% intervals over seeds and over validation images
(utils/eval/ablation_table.py). Params and GFLOPs are counted at --bench-size; CPU latency (batch 1) is
timed round-robin over all variants at the end. In --out:
  ablation.csv, ablation.md, ablation.png   one row per variant: mean and std over seeds, APs/APm/APl,
                                            the difference from the baseline with its intervals
  ablation_per_class.csv, .png              AP@0.5 difference from the baseline per class and variant
  runs/<variant>_s<seed>/                   train.py's run folders, with eval_detections.json (scored detections)
                                            and, with --logger tensorboard, the run's events (one run of
                                            tensorboard --logdir OUT/runs each)
  logs/<variant>_s<seed>.log                train.py's output
  done/<variant>_s<seed>.json               a finished run's scores; a re-run skips it (and re-scores last.pth
                                            when the record predates eval_detections.json or per-class AP)
  budget.json                               the train flags of this comparison; a re-run must use the same
Interrupted? Run the same command again: finished runs are skipped, a run with a last.pth continues
with train.py --resume, and a run without one starts again. Exit codes: as every script's (utils/core/cli.py).
"""
import argparse
import shlex
import sys
from pathlib import Path

from utils.core.cli import EXIT_FAILURE, EXIT_OK, run_main
from utils.core.settings import add_flags

# torch, the model and the runs' machinery are imported by the functions that use them, so that --help and flag
# errors are quick; ablate.parse_variants (utils.eval.ablation_variants.parse_variants) is looked up on first use


def __getattr__(name):
    if name == "parse_variants":
        from utils.eval.ablation_variants import parse_variants
        return parse_variants
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_parser() -> argparse.ArgumentParser:
    """ablate.py's flags, generated from the schema (utils/core/settings.py) by concern."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p, "ablate")
    return p


def variants_from_args(args) -> list:
    """The variants (utils.eval.ablation_variants.Variant) of --variants or --sweep-sites (with --pairs)."""
    from utils.eval import ablation_runs as runs
    from utils.eval.ablation_variants import parse_variants, sweep_variants

    if args.pairs and not args.sweep_sites:
        raise ValueError("--pairs goes with --sweep-sites BLOCK: it sweeps BLOCK over every pair of sites")
    if args.sweep_sites:
        return parse_variants(sweep_variants(args.sweep_sites, args.pairs))
    return parse_variants(args.variants or runs.DEFAULT_VARIANTS)


def run_all(args: argparse.Namespace, command: str) -> int:
    """Train and score every (variant, seed) not done yet, then write the tables and the CAMs."""
    from utils.engine.tb_logger import summary_writer_class
    from utils.eval import ablation_runs as runs
    from utils.eval.ablation_runs import AblationPlan

    variants = variants_from_args(args)
    baseline = runs.pick_baseline(variants, args.baseline)
    plan = AblationPlan(**vars(args))
    if args.seeds < 1 or args.bootstrap < 0:
        raise ValueError(f"--seeds must be >= 1 and --bootstrap >= 0, got {args.seeds} and {args.bootstrap}")
    missing = [image for image in args.cam_images if not Path(image).is_file()]
    if missing:
        raise ValueError(f"--cam-images: no such file: {', '.join(missing)}")
    budget = runs.budget_flags(plan)
    if plan.logger == "tensorboard":  # without the package: one line before any run starts
        summary_writer_class()
        print(f"tensorboard: every run's events under {Path(args.out) / 'runs'}; view them overlaid with "
              f"tensorboard --logdir {Path(args.out) / 'runs'}")
    evaluate = runs.RunScorer(args.data, args.eval_split, args.device, args.workers, args.data_format, args.images)
    runs.check_budget(Path(args.out), {"train_flags": budget, "eval_split": evaluate.split})
    records, failed = [], []
    for variant in variants:
        for seed in range(args.seeds):
            record = runs.run_one(plan, variant, seed, budget, evaluate)
            if record is None:
                failed.append(runs.run_name(variant, seed))
            else:
                records.append(record)
    if records:
        runs.write_tables(plan, command, variants, records, budget, baseline, evaluate)
        write_cams(args, [v for v in variants if v.label == baseline] + [v for v in variants if v.label != baseline])
    if failed:
        print(f"ablate.py: error: {len(failed)} runs failed: {', '.join(failed)}; fix the cause and run the same "
              "command again (finished runs are kept)", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def write_cams(args, variants: list) -> None:
    """--cam-images: one panel per image, the variants (baseline first) whose seed-0 run finished side by side."""
    from utils.deploy.cam import write_variant_cams
    from utils.eval import ablation_runs as runs
    from yolo import YOLO

    last = [(v.label, Path(args.out) / "runs" / runs.run_name(v, 0) / "last.pth") for v in variants]
    models = [(label, YOLO(str(weights), device=args.device, amp="off"))
              for label, weights in last if weights.is_file()]
    for image in args.cam_images if models else []:
        print(f"wrote {write_variant_cams(Path(args.out) / f'cam_{Path(image).stem}.jpg', image, models)}")


def main(argv=None) -> int:
    """ablate.py with `argv` (default: the command line); returns the exit code (utils/core/cli.py)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    command = shlex.join(["python", "ablate.py", *argv])
    return run_main("ablate.py", lambda: run_all(make_parser().parse_args(argv), command),
                    interrupted="run the same command again: finished runs are kept, a run with a last.pth resumes")


if __name__ == "__main__":
    sys.exit(main())
