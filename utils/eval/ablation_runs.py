"""The runs of an ablation (ablate.py) and its tables: one training budget for every run, each (variant, seed)
trained by `python train.py` in a process of its own (its output in logs/, Ctrl-C passed on so that it saves
last.pth; a re-run resumes it) and scored as get_map.py scores a checkpoint (utils.eval.scoring.score with its
defaults), then summarised with intervals over seeds and images (utils/eval/ablation_table.py).

`AblationPlan` holds ablate.py's settings (the schema's, utils/core/schema_tools.py); the functions take it, not
parsed flags.
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

from nets.checkpoint import read_checkpoint
from nets.summary import measure_models
from nets.yolo import YoloBody
from utils.core.config import DEFAULT_ANCHORS_MASK
from utils.core.fileio import write_json_atomic, write_text_atomic
from utils.core.paths import REPO_ROOT
from utils.core.settings import add_flags, settings_class, tool_settings
from utils.data.demo_data import demo_classes_file
from utils.data.layouts import open_dataset
from utils.eval import ablation_table as table
from utils.eval import detect
from utils.eval.ablation_variants import Variant, parse_variants
from utils.eval.scoring import load_split, score

TRAIN_SCRIPT = REPO_ROOT / "train.py"  # each run is `python train.py ...` in its own process
# Flags ablate.py sets itself for every run; --train-args may not override them.
RESERVED_TRAIN_FLAGS = ("--phi", "--attention", "--fusion", "--seed", "--save-dir", "--name", "--resume",
                        "--config")
# Per-run fields of run_args.yaml that may differ between runs of a fair comparison.
PER_RUN_KEYS = {"attention", "fusion", "phi", "seed", "save_dir", "name", "resume", "workers", "device", "quiet",
                "config", "logger"}
INTERRUPT_GRACE_S = 60
DEFAULT_VARIANTS = ["0", "1", "2", "3", "4"]
DETECTIONS_FILE = "eval_detections.json"  # in each run's folder: the detections its record was scored from

AblationPlan = settings_class("AblationPlan", tool_settings("ablate"), tool="ablate", namespace={
    "__module__": __name__, "__doc__": "ablate.py's settings, one field per flag (`python ablate.py --help`), "
    "the schema's defaults."})


def train_parser() -> argparse.ArgumentParser:
    """train.py's flags (the schema's), to check the flags a budget hands to it."""
    parser = argparse.ArgumentParser(prog="train.py", add_help=False)
    add_flags(parser, "train")
    return parser


def pick_baseline(variants: List[Variant], wanted: Optional[str]) -> str:
    """The label of --baseline (given as its label or as listed in --variants), default the first variant's."""
    if wanted is None:
        return variants[0].label
    labels = [v.label for v in variants]
    found = [wanted] if wanted in labels else [v.label for v in parse_variants([wanted]) if v.label in labels]
    if not found:
        raise ValueError(f"--baseline {wanted} is not one of the variants ({', '.join(v.label for v in variants)})")
    return found[0]


def budget_flags(plan: AblationPlan) -> List[str]:
    """The train.py flags shared by every run: they define the comparison."""
    flags = ["--data", plan.data]
    for flag, value in (("--data-format", plan.data_format), ("--images", plan.images), ("--classes", plan.classes),
                        ("--epochs", plan.epochs), ("--input-size", plan.input_size),
                        ("--batch-size", plan.batch_size), ("--eval-period", plan.eval_period)):
        if value is not None:
            flags += [flag, ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]  # 384,640
    extra = shlex.split(plan.train_args)
    clash = sorted({f.split("=")[0] for f in extra if f.split("=")[0] in RESERVED_TRAIN_FLAGS})
    if clash:
        raise ValueError(f"--train-args may not set {', '.join(clash)}: ablate.py sets them for each run "
                         "(use --variants and --seeds instead)")
    _, unknown = train_parser().parse_known_args(flags + extra)
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
    """Run `cmd` in the working directory (so a relative --data or --train-args path means what it means to the
    scorer and the user), appending its output to `log_path` (and echoing it); returns the exit code.

    On Ctrl-C train.py saves last.pth and exits; this waits for it, or sends it SIGINT after a grace period.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:  # line-buffered: tail -f works
        log.write(f"$ {shlex.join(cmd)}\n")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
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


def train_command(plan: AblationPlan, variant: Variant, seed: int, budget: List[str]) -> List[str]:
    """train.py's command line: --resume when the run left a last.pth, else a fresh run (stale folder removed)."""
    runs = Path(plan.out) / "runs"
    name = f"{variant.slug}_s{seed}"
    # --logger: each run's events in its own folder, so `tensorboard --logdir OUT/runs` overlays every run
    common = ["--workers", str(plan.workers), "--device", plan.device, "--quiet", "--logger", plan.logger]
    last = runs / name / "last.pth"
    if last.is_file():
        print(f"{name}: resuming {last}")
        return [sys.executable, str(TRAIN_SCRIPT), "--resume", str(last.resolve()), *common]
    if (runs / name).exists():
        print(f"{name}: removing {runs / name}, an interrupted run without a checkpoint")
        shutil.rmtree(runs / name)
    fusion = ["--fusion", variant.fusion] if variant.fusion != "concat" else []  # concat: the command as before
    return [sys.executable, str(TRAIN_SCRIPT), "--attention", variant.spec, *fusion, "--seed", str(seed),
            "--save-dir", str(runs.resolve()), "--name", name, *budget, *common]


class RunScorer:
    """Scores a run's last.pth on the evaluation split as get_map.py does (utils.eval.scoring, its defaults)."""

    def __init__(self, data: str, split: Optional[str], device: str, workers: int, data_format=None, images=None):
        self.dataset = open_dataset(data, data_format, images)  # its layout detected once, for every run
        self.split = split or self.dataset.default_split("eval")
        self.device, self.workers = device, workers

    def __call__(self, weights: Path) -> Dict:
        """The record's scores; the detections go to DETECTIONS_FILE next to `weights`."""
        # get_map.py's defaults for `weights` on this split; only where and how fast it runs is set
        result, detections, samples, names = score(weights=str(weights), data=self.dataset, split=self.split,
                                                   device=self.device, workers=self.workers)[:4]
        detect.write_coco_results(weights.parent / DETECTIONS_FILE, detections, detect.image_keys(samples), names)
        ckpt = read_checkpoint(weights)
        config = {k: v for k, v in (ckpt.get("args") or {}).items() if k not in PER_RUN_KEYS}
        settings = result["settings"]
        return {**table.record_scores(result), "epochs": int(ckpt.get("epoch", -1)) + 1, "eval_split": self.split,
                "eval_images": settings["images"], "eval_amp": settings["amp"], "num_classes": len(settings["classes"]),
                "train_config": config}

    def samples(self, class_names: List[str]):
        """The evaluation split's samples, in the order the detections files were written."""
        return load_split(self.dataset, self.split, class_names)[0]


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


def run_one(plan: AblationPlan, variant: Variant, seed: int, budget: List[str], evaluate: RunScorer) -> Optional[Dict]:
    """Train (or resume) and score one (variant, seed); returns its record, or None when it failed."""
    out = Path(plan.out)
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
    rc = run_logged(train_command(plan, variant, seed, budget), log, echo=not plan.quiet)
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


def bootstrap_differences(plan: AblationPlan, variants: List[Variant], records: List[Dict], baseline: str,
                          evaluate: RunScorer):
    """ablation_table.bootstrap_differences on the runs' saved detections; none with --bootstrap 0."""
    if plan.bootstrap < 1 or not any(r["variant"] == baseline for r in records):
        return {}, {}
    names = records[0]["class_names"]
    samples = evaluate.samples(names)
    by_label = {v.label: v for v in variants}

    def detections(label: str, seed: int):
        path = Path(plan.out) / "runs" / run_name(by_label[label], seed) / DETECTIONS_FILE
        return detect.read_coco_results(path, samples, names)

    return table.bootstrap_differences(records, baseline, samples, names, detections, plan.bootstrap)


def write_tables(plan: AblationPlan, command: str, variants: List[Variant], records: List[Dict], budget: List[str],
                 baseline: str, evaluate: RunScorer) -> None:
    done = [v for v in variants if any(r["variant"] == v.label for r in records)]
    previous = torch.get_num_threads()
    threads = plan.threads if plan.threads > 0 else previous
    print(f"timing {len(done)} variants at {plan.bench_size}x{plan.bench_size} on the CPU, {threads} threads ...",
          flush=True)
    torch.set_num_threads(threads)
    try:
        bench = bench_variants(done, records[0]["num_classes"], plan.bench_size, plan.latency_runs,
                               plan.latency_warmup)
    finally:
        torch.set_num_threads(previous)
    boot, boot_seeds = bootstrap_differences(plan, done, records, baseline, evaluate)
    rows = table.compare(table.summarise(done, records, bench), records, baseline, boot, boot_seeds)
    notes = table.table_notes(plan, command, records, budget, threads, dataset_named(evaluate.dataset.path))
    notes += table.interval_notes(rows, baseline, plan.bootstrap, records[0]["eval_images"])
    paths = table.write_outputs(Path(plan.out), rows, records, notes, baseline, plan.seeds)
    print(paths[0].read_text(encoding="utf-8"))
    print(f"wrote {', '.join(map(str, paths))}")
