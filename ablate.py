"""Compare attention variants under one budget: `python ablate.py --variants 0 1 2 3 4 --epochs 30 --seeds 3`.

Each variant (a phi integer, a block name, or a per-site spec such as feat1=cbam,feat2=se) is trained
by train.py in a subprocess with the same data, schedule, budget and seeds, and its last.pth is scored
by get_map.score with get_map.py's default settings (conf, NMS, --amp auto, batch size), the path
`python get_map.py --weights last.pth` takes. Params and GFLOPs are counted at --bench-size,
and CPU latency (batch 1) is timed round-robin over all variants at the end, so load drift hits every
variant alike. Everything lands in --out:
  ablation.csv, ablation.md, ablation.png   one row per variant: mean and standard deviation over seeds
  runs/<variant>_s<seed>/                   train.py's run folders (last.pth, results.csv, run_args.yaml)
  logs/<variant>_s<seed>.log                train.py's output
  done/<variant>_s<seed>.json               a finished run's scores; a re-run skips it
  budget.json                               the train flags of this comparison; a re-run must use the same
Interrupted? Run the same command again: finished runs are skipped, a run with a last.pth continues
with train.py --resume, and a run without one starts again. Exit codes: as every script's (utils/core/cli.py).
"""
import argparse
import csv
import io
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

import get_map
import train
from nets.attention import attention_to_str, parse_attention
from nets.summary import count_gflops, count_parameters
from nets.yolo import YoloBody
from utils.core.cli import EXIT_FAILURE, EXIT_OK, run_main
from utils.core.config import DEFAULT_ANCHORS_MASK
from utils.core.fileio import write_text_atomic
from utils.core.plotting import plt, save_figure
from utils.data.voc import default_split, resolve_data
from utils.engine.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parent
# Flags ablate.py sets itself for every run; --train-args may not override them.
RESERVED_TRAIN_FLAGS = ("--phi", "--attention", "--seed", "--save-dir", "--name", "--resume", "--config")
# Per-run fields of run_args.yaml that may differ between runs of a fair comparison.
PER_RUN_KEYS = {"attention", "phi", "seed", "save_dir", "name", "resume", "workers", "device", "quiet", "config"}
INTERRUPT_GRACE_S = 60
CSV_COLUMNS = ["variant", "attention", "seeds", "map50", "map50_std", "map50_95", "map50_95_std",
               "params", "gflops", "latency_ms"]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--variants", nargs="+", default=["0", "1", "2", "3", "4"],
      help="variants, one per argument: a phi integer, a block name or a per-site spec; an argument without '=' "
      "may list several separated by commas (default: 0 1 2 3 4, i.e. phi 0..4)")
    a("--seeds", type=int, default=1, help="train every variant with seeds 0..N-1 (default: 1)")
    a("--out", default="logs/ablation", help="output folder (default: logs/ablation)")
    a("--data", default="VOCdevkit", help="dataset passed to train.py --data (default: VOCdevkit, the demo when empty)")
    a("--classes", default=None, help="classes file passed to train.py (default: train.py's)")
    a("--epochs", type=int, default=None, help="train.py --epochs (default: train.py's)")
    a("--input-size", type=int, default=None, help="train.py --input-size, also the size scored at "
      "(default: train.py's)")
    a("--batch-size", type=int, default=None, help="train.py --batch-size (default: train.py's)")
    a("--eval-period", type=int, default=None, help="train.py --eval-period, mAP during training (default: train.py's)")
    a("--train-args", default="", help="more train.py flags in one string, written with '=': "
      "--train-args=\"--lr 0.02 --no-ema\" (default: none)")
    a("--eval-split", default=None, help="split scored after training (default: the one get_map.py uses)")
    a("--workers", type=int, default=2, help="data loader processes for training and evaluation (default: 2)")
    a("--device", default="auto", help="device for training and evaluation: auto, cpu, cuda (default: auto)")
    a("--bench-size", type=int, default=416, help="input size for params, GFLOPs and latency (default: 416)")
    a("--latency-runs", type=int, default=20, help="timed forward passes per variant; the median is reported "
      "(default: 20)")
    a("--latency-warmup", type=int, default=3, help="untimed forward passes per variant first (default: 3)")
    a("--threads", type=int, default=0, help="CPU threads for the latency timing (default: 0, PyTorch's choice)")
    a("--quiet", action="store_true", help="do not echo train.py's output (it is still in logs/) (default: off)")
    return p


@dataclass(frozen=True)
class Variant:
    label: str      # name in the table: phi3, cbam_eca, feat1=cbam,feat2=se
    spec: str       # what train.py --attention gets
    attention: str  # the normalised placement spec

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9_]+", "-", self.label)


def parse_variants(items: List[str]) -> List[Variant]:
    """Variants from --variants; ValueError for an unknown name or a variant listed twice."""
    words = [w.strip() for item in items for w in (item.split(",") if "=" not in item else [item]) if w.strip()]
    variants = []
    for word in words:
        attention = attention_to_str(parse_attention(word))
        label = f"phi{int(word)}" if word.isdigit() else attention
        if any(v.label == label for v in variants):
            raise ValueError(f"variant {word!r} is listed twice (as {label}); list each variant once")
        variants.append(Variant(label, word, attention))
    if not variants:
        raise ValueError("--variants is empty; give at least one phi integer, block name or per-site spec")
    return variants


def budget_flags(args) -> List[str]:
    """The train.py flags shared by every run: they define the comparison."""
    flags = ["--data", args.data]
    for flag, value in (("--classes", args.classes), ("--epochs", args.epochs), ("--input-size", args.input_size),
                        ("--batch-size", args.batch_size), ("--eval-period", args.eval_period)):
        if value is not None:
            flags += [flag, str(value)]
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
    return [sys.executable, str(ROOT / "train.py"), "--attention", variant.spec, "--seed", str(seed),
            "--save-dir", str(runs.resolve()), "--name", name, *budget, *common]


class RunScorer:
    """Scores a run's last.pth on the evaluation split with get_map.score and get_map.py's defaults."""

    def __init__(self, data: str, split: Optional[str], device: str, workers: int):
        self.data = resolve_data(data)
        self.split = split or default_split(self.data, "eval")
        self.device, self.workers = device, workers

    def __call__(self, weights: Path) -> Dict:
        # get_map.py's defaults for `weights` on this split; only where and how fast it runs is set
        args = get_map.make_parser().parse_args(["--weights", str(weights), "--data", str(self.data), "--split",
                                                 self.split, "--device", self.device, "--workers", str(self.workers)])
        result = get_map.score(args)[0]
        ckpt = read_checkpoint(weights)
        config = {k: v for k, v in (ckpt.get("args") or {}).items() if k not in PER_RUN_KEYS}
        settings = result["settings"]
        return {"map50": float(result["map50"]), "map50_95": float(result["map50_95"] or 0.0),
                "epochs": int(ckpt.get("epoch", -1)) + 1, "eval_split": self.split, "eval_images": settings["images"],
                "eval_amp": settings["amp"], "num_classes": len(settings["classes"]), "train_config": config}


def run_one(args, variant: Variant, seed: int, budget: List[str], evaluate: RunScorer) -> Optional[Dict]:
    """Train (or resume) and score one (variant, seed); returns its record, or None when it failed."""
    out = Path(args.out)
    name = f"{variant.slug}_s{seed}"
    record_path = out / "done" / f"{name}.json"
    if record_path.is_file():
        print(f"{name}: done before, skipped ({record_path})")
        return json.loads(record_path.read_text(encoding="utf-8"))
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
    record = {"variant": variant.label, "attention": variant.attention, "seed": seed, "run": str(weights.parent),
              "train_seconds": round(time.time() - start, 1), **evaluate(weights)}
    record_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(record_path, json.dumps(record, indent=1) + "\n")
    print(f"{name}: mAP@0.5 {record['map50']:.4f}, mAP@0.5:0.95 {record['map50_95']:.4f}", flush=True)
    return record


def bench_variants(variants: List[Variant], num_classes: int, size: int, runs: int, warmup: int) -> Dict[str, Dict]:
    """{label: params, gflops, latency_ms}; latency is the median of `runs` batch-1 CPU passes, timed round-robin."""
    models = {v.label: YoloBody(DEFAULT_ANCHORS_MASK, num_classes, attention=v.attention).eval() for v in variants}
    stats = {label: {"params": count_parameters(m), "gflops": count_gflops(m, size)} for label, m in models.items()}
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    times = {label: [] for label in models}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(warmup):
                model(x)
        for _ in range(max(1, runs)):
            for label, model in models.items():
                start = time.perf_counter()
                model(x)
                times[label].append((time.perf_counter() - start) * 1000)
    for label, ms in times.items():
        stats[label]["latency_ms"] = statistics.median(ms)
    return stats


def mean_std(values: List[float]):
    """(mean, sample standard deviation or None for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarise(variants: List[Variant], records: List[Dict], bench: Dict[str, Dict]) -> List[Dict]:
    """One row per variant with at least one finished run."""
    rows = []
    for v in variants:
        mine = sorted((r for r in records if r["variant"] == v.label), key=lambda r: r["seed"])
        if not mine:
            continue
        map50, map50_std = mean_std([r["map50"] for r in mine])
        map50_95, map50_95_std = mean_std([r["map50_95"] for r in mine])
        rows.append({"variant": v.label, "attention": v.attention, "seeds": " ".join(str(r["seed"]) for r in mine),
                     "map50": map50, "map50_std": map50_std, "map50_95": map50_95, "map50_95_std": map50_95_std,
                     **bench[v.label]})
    return rows


def config_differences(records: List[Dict]) -> List[str]:
    """Training settings (from each run's checkpoint) that are not the same in every run."""
    keys = sorted({k for r in records for k in r.get("train_config", {})})
    return [k for k in keys if len({json.dumps(r.get("train_config", {}).get(k)) for r in records}) > 1]


def write_csv(rows: List[Dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in CSV_COLUMNS})
    write_text_atomic(path, buf.getvalue())


def _pm(mean: float, std: Optional[float]) -> str:
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def write_markdown(rows: List[Dict], path: Path, notes: List[str]) -> None:
    lines = ["# Ablation", "",
             "| variant | attention | seeds | mAP@0.5 | mAP@0.5:0.95 | params | GFLOPs | latency (ms) |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['attention']} | {r['seeds']} | {_pm(r['map50'], r['map50_std'])} | "
                     f"{_pm(r['map50_95'], r['map50_95_std'])} | {r['params']:,} | {r['gflops']:.3f} | "
                     f"{r['latency_ms']:.1f} |")
    write_text_atomic(path, "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n")


def write_chart(rows: List[Dict], path: Path, seeds: int) -> None:
    x = np.arange(len(rows))
    fig, (ax_map, ax_ms) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(rows) + 4), 4.5),
                                        gridspec_kw={"width_ratios": [2, 1]})
    for offset, key, label in ((-0.2, "map50", "mAP@0.5"), (0.2, "map50_95", "mAP@0.5:0.95")):
        errors = [r[f"{key}_std"] or 0.0 for r in rows] if seeds > 1 else None  # no spread from one seed
        ax_map.bar(x + offset, [r[key] for r in rows], 0.4, yerr=errors, capsize=3, label=label)
    ax_map.set_title(f"mAP by variant (mean ± std over {seeds} seeds)" if seeds > 1 else "mAP by variant (one seed)")
    ax_map.set_ylim(0, 1.15)  # room for the legend above the bars
    ax_map.legend(loc="upper center", ncol=2)
    ax_ms.bar(x, [r["latency_ms"] for r in rows], 0.6, color="tab:gray")
    ax_ms.set_title("CPU latency, batch 1 (ms)")
    for ax in (ax_map, ax_ms):
        ax.set_xticks(x, [r["variant"] for r in rows], rotation=30, ha="right")
    save_figure(fig, path)


def table_notes(args, command: str, records: List[Dict], budget: List[str], threads: int) -> List[str]:
    first = records[0]
    notes = [f"command: `{command}`", f"train.py flags shared by every run: `{shlex.join(budget)}`",
             f"scored: last.pth of each run on {first['eval_split']} ({first['eval_images']} images) with "
             f"get_map.py's defaults (amp {first.get('eval_amp', 'auto')}); mAP is the mean over seeds, "
             "± the sample standard deviation",
             f"params and GFLOPs at {args.bench_size}x{args.bench_size}; latency: median of {args.latency_runs} "
             f"batch-1 forward passes on the CPU ({threads} thread{'' if threads == 1 else 's'}) after "
             f"{args.latency_warmup} warm-up pass{'' if args.latency_warmup == 1 else 'es'}, eager fp32, timed "
             "round-robin over the variants"]
    if args.seeds < 2:
        notes.append("one seed per variant: no spread is shown; use --seeds 3 or more to tell a gain from noise")
    differ = config_differences(records)
    if differ:
        notes.append(f"WARNING: the runs were not trained alike, they differ in: {', '.join(differ)}")
    return notes


def run_all(args, command: str) -> int:
    variants = parse_variants(args.variants)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    budget = budget_flags(args)
    evaluate = RunScorer(args.data, args.eval_split, args.device, args.workers)
    check_budget(Path(args.out), {"train_flags": budget, "eval_split": evaluate.split})
    records, failed = [], []
    for variant in variants:
        for seed in range(args.seeds):
            record = run_one(args, variant, seed, budget, evaluate)
            if record is None:
                failed.append(f"{variant.slug}_s{seed}")
            else:
                records.append(record)
    if records:
        write_tables(args, command, variants, records, budget)
    if failed:
        print(f"ablate.py: error: {len(failed)} runs failed: {', '.join(failed)}; fix the cause and run the same "
              "command again (finished runs are kept)", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def write_tables(args, command: str, variants: List[Variant], records: List[Dict], budget: List[str]) -> None:
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
    rows = summarise(done, records, bench)
    out = Path(args.out)
    notes = table_notes(args, command, records, budget, threads)
    write_csv(rows, out / "ablation.csv")
    write_markdown(rows, out / "ablation.md", notes)
    write_chart(rows, out / "ablation.png", args.seeds)
    print((out / "ablation.md").read_text(encoding="utf-8"))
    print(f"wrote {out / 'ablation.csv'}, {out / 'ablation.md'}, {out / 'ablation.png'}")


def main(argv=None) -> int:
    """ablate.py with `argv` (default: the command line); returns the exit code (utils/core/cli.py)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    command = shlex.join(["python", "ablate.py", *argv])
    return run_main("ablate.py", lambda: run_all(make_parser().parse_args(argv), command),
                    interrupted="run the same command again: finished runs are kept, a run with a last.pth resumes")


if __name__ == "__main__":
    sys.exit(main())
