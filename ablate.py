"""Compare attention variants under one budget: `python ablate.py --variants 0 1 2 3 4 --epochs 30 --seeds 3`.

Each variant (a phi integer, a block name, or a per-site spec such as feat1=cbam,feat2=se, any of them
with an FPN merge as one more part: enc,fusion=gated; --sweep-sites cbam: phi 0, then cbam at each site in
turn, --pairs at each pair) is trained by train.py in a subprocess with the same data, schedule, budget and
seeds, and its last.pth is scored by get_map.score with get_map.py's default settings (conf, NMS, --amp
auto, batch size), the path `python get_map.py --weights last.pth` takes. Differences from the baseline
(the first variant, or --baseline) get 95% intervals over seeds and over validation images
(utils/eval/ablation_table.py). Params and GFLOPs are counted at --bench-size; CPU latency (batch 1) is
timed round-robin over all variants at the end. In --out:
  ablation.csv, ablation.md, ablation.png   one row per variant: mean and std over seeds, APs/APm/APl,
                                            the difference from the baseline with its intervals
  ablation_per_class.csv, .png              AP@0.5 difference from the baseline per class and variant
  runs/<variant>_s<seed>/                   train.py's run folders, with eval_detections.json (scored detections)
  logs/<variant>_s<seed>.log                train.py's output
  done/<variant>_s<seed>.json               a finished run's scores; a re-run skips it (and re-scores last.pth
                                            when the record predates eval_detections.json or per-class AP)
  budget.json                               the train flags of this comparison; a re-run must use the same
Interrupted? Run the same command again: finished runs are skipped, a run with a last.pth continues
with train.py --resume, and a run without one starts again. Exit codes: as every script's (utils/core/cli.py).
"""
import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

import get_map
import train
from yolo import YOLO
from nets.summary import measure_models
from nets.yolo import YoloBody
from utils.core.cli import EXIT_FAILURE, EXIT_OK, run_main
from utils.core.settings import add_flags
from utils.core.config import DEFAULT_ANCHORS_MASK
from utils.core.fileio import write_json_atomic, write_text_atomic
from utils.data.demo_data import demo_classes_file
from utils.data.voc import default_split, resolve_data
from utils.engine.checkpoint import read_checkpoint
from utils.eval import ablation_table as table
from utils.deploy.cam import write_variant_cams
from utils.eval.ablation_variants import Variant, parse_variants, sweep_variants
from utils.eval import detect

ROOT = Path(__file__).resolve().parent
# Flags ablate.py sets itself for every run; --train-args may not override them.
RESERVED_TRAIN_FLAGS = ("--phi", "--attention", "--fusion", "--seed", "--save-dir", "--name", "--resume",
                        "--config")
# Per-run fields of run_args.yaml that may differ between runs of a fair comparison.
PER_RUN_KEYS = {"attention", "fusion", "phi", "seed", "save_dir", "name", "resume", "workers", "device", "quiet",
                "config"}
INTERRUPT_GRACE_S = 60
DEFAULT_VARIANTS = ["0", "1", "2", "3", "4"]
DETECTIONS_FILE = "eval_detections.json"  # in each run's folder: the detections its record was scored from


def make_parser() -> argparse.ArgumentParser:
    """ablate.py's flags, generated from the schema (utils/core/settings.py) by concern."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p, "ablate")
    return p


def variants_from_args(args) -> List[Variant]:
    """The variants of --variants or --sweep-sites (with --pairs)."""
    if args.pairs and not args.sweep_sites:
        raise ValueError("--pairs goes with --sweep-sites BLOCK: it sweeps BLOCK over every pair of sites")
    if args.sweep_sites:
        return parse_variants(sweep_variants(args.sweep_sites, args.pairs))
    return parse_variants(args.variants or DEFAULT_VARIANTS)


def pick_baseline(variants: List[Variant], wanted: Optional[str]) -> str:
    """The label of --baseline (given as its label or as listed in --variants), default the first variant's."""
    if wanted is None:
        return variants[0].label
    labels = [v.label for v in variants]
    found = [wanted] if wanted in labels else [v.label for v in parse_variants([wanted]) if v.label in labels]
    if not found:
        raise ValueError(f"--baseline {wanted} is not one of the variants ({', '.join(v.label for v in variants)})")
    return found[0]


def budget_flags(args) -> List[str]:
    """The train.py flags shared by every run: they define the comparison."""
    flags = ["--data", args.data]
    for flag, value in (("--data-format", args.data_format), ("--images", args.images), ("--classes", args.classes),
                        ("--epochs", args.epochs), ("--input-size", args.input_size),
                        ("--batch-size", args.batch_size), ("--eval-period", args.eval_period)):
        if value is not None:
            flags += [flag, ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]  # 384,640
    extra = shlex.split(args.train_args)
    clash = sorted({f.split("=")[0] for f in extra if f.split("=")[0] in RESERVED_TRAIN_FLAGS})
    if clash:
        raise ValueError(f"--train-args may not set {', '.join(clash)}: ablate.py sets them for each run "
                         "(use --variants and --seeds instead)")
    _, unknown = train.make_parser().parse_known_args(flags + extra)
    if unknown:
        raise ValueError(f"--train-args holds {' '.join(unknown)}, which train.py does not know; see "
                         "python train.py --help")
    return flags + extra


def check_budget(out: Path, budget: Dict) -> None:
    """Write budget.json, or check that `out` holds no checkpoint or score made with another budget."""
    path = out / "budget.json"
    made = any(out.glob("runs/*/last.pth")) or any(out.glob("done/*.json"))
    if path.is_file() and made:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved != budget:
            raise ValueError(f"{out} holds runs made with another budget: {saved} there, {budget} now; use another "
                             f"--out, or the same flags as before")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(budget, indent=1) + "\n")


def run_logged(cmd: List[str], log_path: Path, echo: bool) -> int:
    """Run `cmd` in ROOT, appending its output to `log_path` (and echoing it); returns the exit code.

    On Ctrl-C train.py saves last.pth and exits; this waits for it, or sends it SIGINT after a grace period.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:  # line-buffered: tail -f works
        log.write(f"$ {shlex.join(cmd)}\n")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        try:
            for line in proc.stdout:
                log.write(line)
                if echo:
                    print("  | " + line, end="", flush=True)
            return proc.wait()
        except KeyboardInterrupt:
            try:
                rest, _ = proc.communicate(timeout=INTERRUPT_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)
                rest, _ = proc.communicate()
            log.write(rest or "")
            raise


def train_command(args, variant: Variant, seed: int, budget: List[str]) -> List[str]:
    """train.py's command line: --resume when the run left a last.pth, else a fresh run (stale folder removed)."""
    runs = Path(args.out) / "runs"
    name = f"{variant.slug}_s{seed}"
    common = ["--workers", str(args.workers), "--device", args.device, "--quiet"]
    last = runs / name / "last.pth"
    if last.is_file():
        print(f"{name}: resuming {last}")
        return [sys.executable, str(ROOT / "train.py"), "--resume", str(last.resolve()), *common]
    if (runs / name).exists():
        print(f"{name}: removing {runs / name}, an interrupted run without a checkpoint")
        shutil.rmtree(runs / name)
    fusion = ["--fusion", variant.fusion] if variant.fusion != "concat" else []  # concat: the command as before
    return [sys.executable, str(ROOT / "train.py"), "--attention", variant.spec, *fusion, "--seed", str(seed),
            "--save-dir", str(runs.resolve()), "--name", name, *budget, *common]


class RunScorer:
    """Scores a run's last.pth on the evaluation split with get_map.score and get_map.py's defaults."""

    def __init__(self, data: str, split: Optional[str], device: str, workers: int, data_format=None, images=None):
        self.options = {"data_format": data_format, "images_dir": images}
        self.data = resolve_data(data, **self.options)
        self.split = split or default_split(self.data, "eval", **self.options)
        self.device, self.workers = device, workers
        self.flags = [f for flag, v in (("--data-format", data_format), ("--images", images)) if v for f in (flag, v)]

    def __call__(self, weights: Path) -> Dict:
        """The record's scores; the detections go to DETECTIONS_FILE next to `weights`."""
        # get_map.py's defaults for `weights` on this split; only where and how fast it runs is set
        args = get_map.make_parser().parse_args(["--weights", str(weights), "--data", str(self.data), "--split",
                                                 self.split, "--device", self.device, "--workers", str(self.workers),
                                                 *self.flags])
        result, detections, samples, names, _ = get_map.score(args)
        detect.write_coco_results(weights.parent / DETECTIONS_FILE, detections, detect.image_keys(samples), names)
        ckpt = read_checkpoint(weights)
        config = {k: v for k, v in (ckpt.get("args") or {}).items() if k not in PER_RUN_KEYS}
        settings = result["settings"]
        return {**table.record_scores(result), "epochs": int(ckpt.get("epoch", -1)) + 1, "eval_split": self.split,
                "eval_images": settings["images"], "eval_amp": settings["amp"], "num_classes": len(settings["classes"]),
                "train_config": config}

    def samples(self, class_names: List[str]):
        """The evaluation split's samples, in the order the detections files were written."""
        return get_map.load_split(self.data, self.split, class_names, options=self.options)[0]


def dataset_named(data: Path) -> str:
    """The dataset scored, as the notes name it: relative to the working folder when inside it, and the
    demo called so (`--data VOCdevkit` falls back to it when VOCdevkit is absent)."""
    path = Path(data).resolve()
    shown = str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)
    return shown + (" (the embedded demo dataset)" if demo_classes_file(path) is not None else "")


def run_name(variant: Variant, seed: int) -> str:
    return f"{variant.slug}_s{seed}"


def rescore(out: Path, name: str, record: Dict, evaluate: RunScorer) -> Optional[Dict]:
    """A record lacking ablation_table.RECORD_FIELDS or its detections, scored again from last.pth (no training)."""
    weights = out / "runs" / name / "last.pth"
    record_path = out / "done" / f"{name}.json"
    lacks = f"the per-image detections ({DETECTIONS_FILE}), APs/APm/APl or per-class AP that {record_path} lacks"
    if not weights.is_file():
        print(f"error: {name}: {weights} is missing, so {lacks} cannot be made; restore last.pth, or delete "
              f"{record_path} to train the run again", file=sys.stderr)
        return None
    print(f"{name}: done before; re-scoring {weights} for {lacks} (no training)", flush=True)
    new = {**record, **evaluate(weights)}
    for key in ("map50", "map50_95"):
        if abs(new[key] - record[key]) > 1e-4:
            print(f"note: {name}: {key} {record[key]:.4f} in the old record, {new[key]:.4f} now; the new one is kept")
    write_json_atomic(record_path, new, indent=1)
    return new


def run_one(args, variant: Variant, seed: int, budget: List[str], evaluate: RunScorer) -> Optional[Dict]:
    """Train (or resume) and score one (variant, seed); returns its record, or None when it failed."""
    out = Path(args.out)
    name = run_name(variant, seed)
    record_path = out / "done" / f"{name}.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if any(k not in record for k in table.RECORD_FIELDS) or not (out / "runs" / name / DETECTIONS_FILE).is_file():
            return rescore(out, name, record, evaluate)
        print(f"{name}: done before, skipped ({record_path})")
        return record
    log = out / "logs" / f"{name}.log"
    print(f"{name}: training attention {variant.attention} with seed {seed}; output in {log}", flush=True)
    start = time.time()
    rc = run_logged(train_command(args, variant, seed, budget), log, echo=not args.quiet)
    if rc == 130:
        raise KeyboardInterrupt
    weights = out / "runs" / name / "last.pth"
    if rc != 0 or not weights.is_file():
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-8:])
        print(f"error: {name}: train.py exited with {rc} (last.pth {'present' if weights.is_file() else 'missing'}); "
              f"see {log}; its last lines:\n{tail}", file=sys.stderr)
        return None
    record = {"variant": variant.label, "attention": variant.attention, "fusion": variant.fusion, "seed": seed,
              "run": str(weights.parent), "train_seconds": round(time.time() - start, 1), **evaluate(weights)}
    write_json_atomic(record_path, record, indent=1)
    print(f"{name}: mAP@0.5 {record['map50']:.4f}, mAP@0.5:0.95 {record['map50_95']:.4f}", flush=True)
    return record


def bench_variants(variants: List[Variant], num_classes: int, size: int, runs: int, warmup: int) -> Dict[str, Dict]:
    """{label: params, gflops, latency_ms} (nets.summary.measure_models) of each variant's model."""
    models = {v.label: YoloBody(DEFAULT_ANCHORS_MASK, num_classes, attention=v.attention, fusion=v.fusion,
                                input_size=size).eval() for v in variants}
    return measure_models(models, size, runs, warmup)


def bootstrap_differences(args, variants: List[Variant], records: List[Dict], baseline: str, evaluate: RunScorer):
    """ablation_table.bootstrap_differences on the runs' saved detections; none with --bootstrap 0."""
    if args.bootstrap < 1 or not any(r["variant"] == baseline for r in records):
        return {}, {}
    names = records[0]["class_names"]
    samples = evaluate.samples(names)
    by_label = {v.label: v for v in variants}

    def detections(label: str, seed: int):
        path = Path(args.out) / "runs" / run_name(by_label[label], seed) / DETECTIONS_FILE
        return detect.read_coco_results(path, samples, names)

    return table.bootstrap_differences(records, baseline, samples, names, detections, args.bootstrap)


def run_all(args, command: str) -> int:
    variants = variants_from_args(args)
    baseline = pick_baseline(variants, args.baseline)
    if args.seeds < 1 or args.bootstrap < 0:
        raise ValueError(f"--seeds must be >= 1 and --bootstrap >= 0, got {args.seeds} and {args.bootstrap}")
    missing = [image for image in args.cam_images if not Path(image).is_file()]
    if missing:
        raise ValueError(f"--cam-images: no such file: {', '.join(missing)}")
    budget = budget_flags(args)
    evaluate = RunScorer(args.data, args.eval_split, args.device, args.workers, args.data_format, args.images)
    check_budget(Path(args.out), {"train_flags": budget, "eval_split": evaluate.split})
    records, failed = [], []
    for variant in variants:
        for seed in range(args.seeds):
            record = run_one(args, variant, seed, budget, evaluate)
            if record is None:
                failed.append(run_name(variant, seed))
            else:
                records.append(record)
    if records:
        write_tables(args, command, variants, records, budget, baseline, evaluate)
        write_cams(args, [v for v in variants if v.label == baseline] + [v for v in variants if v.label != baseline])
    if failed:
        print(f"ablate.py: error: {len(failed)} runs failed: {', '.join(failed)}; fix the cause and run the same "
              "command again (finished runs are kept)", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def write_tables(args, command: str, variants: List[Variant], records: List[Dict], budget: List[str],
                 baseline: str, evaluate: RunScorer) -> None:
    done = [v for v in variants if any(r["variant"] == v.label for r in records)]
    previous = torch.get_num_threads()
    threads = args.threads if args.threads > 0 else previous
    print(f"timing {len(done)} variants at {args.bench_size}x{args.bench_size} on the CPU, {threads} threads ...",
          flush=True)
    torch.set_num_threads(threads)
    try:
        bench = bench_variants(done, records[0]["num_classes"], args.bench_size, args.latency_runs,
                               args.latency_warmup)
    finally:
        torch.set_num_threads(previous)
    boot, boot_seeds = bootstrap_differences(args, done, records, baseline, evaluate)
    rows = table.compare(table.summarise(done, records, bench), records, baseline, boot, boot_seeds)
    notes = table.table_notes(args, command, records, budget, threads, dataset_named(evaluate.data))
    notes += table.interval_notes(rows, baseline, args.bootstrap, records[0]["eval_images"])
    paths = table.write_outputs(Path(args.out), rows, records, notes, baseline, args.seeds)
    print(paths[0].read_text(encoding="utf-8"))
    print(f"wrote {', '.join(map(str, paths))}")


def write_cams(args, variants: List[Variant]) -> None:
    """--cam-images: one panel per image, the variants (baseline first) whose seed-0 run finished side by side."""
    runs = [(v.label, Path(args.out) / "runs" / run_name(v, 0) / "last.pth") for v in variants]
    models = [(label, YOLO(str(weights), device=args.device, amp="off")) for label, weights in runs if weights.is_file()]
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
