"""The tables and pictures of an ablation (ablate.py): one row per variant, its difference from the baseline
with 95% intervals, and the per-class AP differences.

Records are the done/<variant>_s<seed>.json dicts ablate.py writes: variant, seed, map50, map50_95,
map_small, map_medium, map_large (COCO APs/APm/APl, None where the split has no object of that size),
and per_class_ap50 ({class: VOC AP@0.5, None for a class without ground truth}).

Two intervals for each difference (variant - baseline):
- over seeds: Student's t interval of the per-seed differences (stats.paired_t_interval), over the
  seeds both variants finished; needs 2 or more.
- bootstrap: images of the validation split resampled, both variants of one seed scored on the same
  resample (bootstrap_differences: stats.paired_bootstrap with stats.ResampledMap).
A difference is marked distinguishable when its deciding interval excludes 0: the seed interval with
2 or more seeds, else the bootstrap interval.
"""
import csv
import io
import json
import shlex
import statistics
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from utils.core.fileio import write_text_atomic
from utils.core.plotting import plt, save_figure
from utils.eval.ablation_variants import shown_name
from utils.eval.stats import Interval, ResampledMap, distinguishable, paired_bootstrap, paired_t_interval

NA = "n/a"
METRICS = (("map50", "mAP@0.5"), ("map50_95", "mAP@0.5:0.95"))  # also the order of a bootstrap Interval's entries
SIZE_KEYS = ("map_small", "map_medium", "map_large")
DIFF_FIELDS = ("", "_seeds_low", "_seeds_high", "_boot", "_boot_low", "_boot_high", "_distinguishable")
CSV_COLUMNS = ["variant", "attention", "seeds", "map50", "map50_std", "map50_95", "map50_95_std", *SIZE_KEYS,
               "paired_seeds", "bootstrap_seed", *[f"d_{key}{f}" for key, _ in METRICS for f in DIFF_FIELDS],
               "params", "gflops", "latency_ms"]

# Fields a record gets from record_scores; records written before they existed lack some.
RECORD_FIELDS = ("map50", "map50_95", *SIZE_KEYS, "class_names", "per_class_ap50")
Runs = Dict[int, Dict]  # seed -> record of one variant


def record_scores(result: Dict) -> Dict:
    """The RECORD_FIELDS of a utils.eval.scoring.evaluate result (COCO stats: evaluator.evaluate_detections)."""
    return {"map50": float(result["map50"]), "map50_95": float(result["map50_95"] or 0.0),
            **{k: result["coco"][k] for k in SIZE_KEYS}, "class_names": list(result["settings"]["classes"]),
            "per_class_ap50": {r["class"]: r["ap"] for r in result["per_class"]}}


def runs_by_variant(records: Sequence[Dict]) -> Dict[str, Runs]:
    """{variant label: {seed: record}}."""
    out: Dict[str, Runs] = {}
    for r in records:
        out.setdefault(r["variant"], {})[int(r["seed"])] = r
    return out


def common_seeds(a: Runs, b: Runs) -> List[int]:
    """The seeds both variants finished, ascending: the pairs of a paired comparison."""
    return sorted(set(a) & set(b))


def mean_std(values: List[float]):
    """(mean, sample standard deviation or None for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def mean_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
    """Mean of the values that exist; None when none does (e.g. no object of a size in the split)."""
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def summarise(variants, records: List[Dict], bench: Dict[str, Dict]) -> List[Dict]:
    """One row per variant (objects with .label and .attention) with at least one finished run."""
    rows = []
    for v in variants:
        mine = sorted((r for r in records if r["variant"] == v.label), key=lambda r: r["seed"])
        if not mine:
            continue
        map50, map50_std = mean_std([r["map50"] for r in mine])
        map50_95, map50_95_std = mean_std([r["map50_95"] for r in mine])
        sizes = {k: mean_or_none([r.get(k) for r in mine]) for k in SIZE_KEYS}
        rows.append({"variant": v.label, "attention": v.attention, "seeds": " ".join(str(r["seed"]) for r in mine),
                     "map50": map50, "map50_std": map50_std, "map50_95": map50_95, "map50_95_std": map50_95_std,
                     **sizes, **bench[v.label]})
    return rows


def seed_interval(base: Runs, mine: Runs, key: str) -> Optional[Interval]:
    """Paired t interval of mine - base over the common seeds; None with fewer than 2."""
    seeds = common_seeds(base, mine)
    if len(seeds) < 2:
        return None
    return paired_t_interval([base[s][key] for s in seeds], [mine[s][key] for s in seeds])


def difference_fields(base: Runs, mine: Runs, boot: Optional[Interval]) -> Dict:
    """The d_* fields of one variant's row: mean paired difference, both intervals, and the verdict."""
    seeds = common_seeds(base, mine)
    out = {"paired_seeds": " ".join(map(str, seeds))}
    for i, (key, _) in enumerate(METRICS):
        by_seed = seed_interval(base, mine, key)
        diffs = [mine[s][key] - base[s][key] for s in seeds]
        b = Interval(*(float(np.asarray(x)[i]) for x in boot)) if boot is not None else None
        out[f"d_{key}"] = statistics.fmean(diffs) if diffs else None
        out[f"d_{key}_seeds_low"], out[f"d_{key}_seeds_high"] = (by_seed.low, by_seed.high) if by_seed else (None, None)
        out[f"d_{key}_boot"], out[f"d_{key}_boot_low"], out[f"d_{key}_boot_high"] = b or (None, None, None)
        deciding = by_seed if by_seed is not None else b
        out[f"d_{key}_distinguishable"] = deciding is not None and distinguishable(deciding.low, deciding.high)
    return out


def compare(rows: List[Dict], records: List[Dict], baseline: str, bootstrap: Mapping[str, Interval],
            bootstrap_seeds: Mapping[str, int]) -> List[Dict]:
    """Add to each row its differences from the baseline row (None on the baseline itself).

    bootstrap: {variant: Interval of [mAP@0.5, mAP@0.5:0.95] differences}, on seed bootstrap_seeds[variant].
    """
    runs = runs_by_variant(records)
    for row in rows:
        label = row["variant"]
        row["bootstrap_seed"] = bootstrap_seeds.get(label)
        if label == baseline or baseline not in runs:
            row.update({f"d_{k}{f}": None for k, _ in METRICS for f in DIFF_FIELDS}, paired_seeds=None)
            continue
        row.update(difference_fields(runs[baseline], runs[label], bootstrap.get(label)))
    return rows


def bootstrap_differences(records: List[Dict], baseline: str, samples, class_names: Sequence[str],
                          detections_of: Callable[[str, int], Sequence[np.ndarray]],
                          reps: int) -> Tuple[Dict[str, Interval], Dict[str, int]]:
    """({variant: Interval of its [mAP@0.5, mAP@0.5:0.95] differences from the baseline}, {variant: seed}).

    Each variant's pair is the lowest seed both finished; detections_of(label, seed) gives that run's
    detections of `samples` (one [K, 6] array per sample). Resamples drawn with numpy seed 0.
    """
    if len(samples) != records[0]["eval_images"]:
        raise ValueError(f"the evaluation split holds {len(samples)} images now, but the runs were scored on "
                         f"{records[0]['eval_images']}; score them on the split they were scored on")
    runs = runs_by_variant(records)
    intervals, seeds = {}, {}
    for label, mine in runs.items():
        common = common_seeds(runs.get(baseline, {}), mine)
        if label == baseline or not common:
            continue
        seeds[label] = common[0]
        print(f"bootstrap: {label} - {baseline} on seed {common[0]}, {reps} resamples of {len(samples)} images ...",
              flush=True)
        score = ResampledMap(detections_of(baseline, common[0]), detections_of(label, common[0]), samples, class_names)
        intervals[label] = paired_bootstrap(score, len(samples), reps)
    return intervals, seeds


def deciding_interval(row: Dict, key: str) -> Optional[Interval]:
    """The interval that decides the verdict on `key`: over seeds when there is one, else the bootstrap's."""
    if row.get(f"d_{key}_seeds_low") is not None:
        return Interval(row[f"d_{key}"], row[f"d_{key}_seeds_low"], row[f"d_{key}_seeds_high"])
    if row.get(f"d_{key}_boot_low") is not None:
        return Interval(row[f"d_{key}_boot"], row[f"d_{key}_boot_low"], row[f"d_{key}_boot_high"])
    return None


def per_class_differences(records: List[Dict], labels: Sequence[str], baseline: str):
    """(class names, {variant: [AP@0.5 difference from the baseline per class, mean over the common seeds]}).

    A class gets None where no common seed has an AP for it in both runs (no ground truth).
    """
    runs = runs_by_variant(records)
    base = runs.get(baseline, {})
    classes = list(next(iter(base.values()))["per_class_ap50"]) if base else []
    table = {}
    for label in labels:
        if label == baseline or label not in runs:
            continue
        seeds = common_seeds(base, runs[label])
        table[label] = [mean_or_none([_class_diff(base[s], runs[label][s], name) for s in seeds]) for name in classes]
    return classes, table


def _class_diff(base: Dict, mine: Dict, name: str) -> Optional[float]:
    a, b = base["per_class_ap50"].get(name), mine["per_class_ap50"].get(name)
    return None if a is None or b is None else b - a


def _csv_text(fieldnames: List[str], rows: List[Dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: NA if row.get(k) is None else row[k] for k in fieldnames})
    return buf.getvalue()


def write_csv(rows: List[Dict], path: Path) -> None:
    """ablation.csv: CSV_COLUMNS, 'n/a' where a value does not exist."""
    write_text_atomic(path, _csv_text(CSV_COLUMNS, rows))


def write_per_class_csv(classes: List[str], table: Dict[str, List[Optional[float]]], path: Path) -> None:
    """ablation_per_class.csv: one row per class, one column per variant (AP@0.5 difference from the baseline)."""
    rows = [{"class": name, **{label: diffs[i] for label, diffs in table.items()}} for i, name in enumerate(classes)]
    write_text_atomic(path, _csv_text(["class", *table], rows))


def _pm(mean: float, std: Optional[float]) -> str:
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def _ap(value: Optional[float]) -> str:
    return NA if value is None else f"{value:.4f}"


def _signed(value: float, digits: int = 4) -> str:
    """+0.0123; a value that rounds to zero is +0.0000, never -0.0000."""
    return f"{round(value, digits) + 0.0:+.{digits}f}"


def _interval_text(diff, low, high, marked: bool) -> str:
    return f"{_signed(diff)} [{_signed(low)}, {_signed(high)}]" + (" *" if marked else "")


def difference_cells(row: Dict, baseline: str) -> List[str]:
    """The four difference cells of a row: per metric, over seeds, then bootstrap; * on the deciding one."""
    if row["variant"] == baseline:
        return ["baseline"] * 4
    seed_cells, boot_cells = [], []
    for key, _ in METRICS:
        marked = row[f"d_{key}_distinguishable"]
        by_seed = row[f"d_{key}_seeds_low"] is not None
        if by_seed:
            seed_cells.append(_interval_text(row[f"d_{key}"], row[f"d_{key}_seeds_low"], row[f"d_{key}_seeds_high"],
                                             marked))
        else:
            seed_cells.append(f"{NA} (one seed)" if row["paired_seeds"] else f"{NA} (no common seed)")
        if row[f"d_{key}_boot_low"] is None:
            boot_cells.append(NA)
        else:
            boot_cells.append(_interval_text(row[f"d_{key}_boot"], row[f"d_{key}_boot_low"],
                                             row[f"d_{key}_boot_high"], marked and not by_seed))
    return seed_cells + boot_cells


def markdown_text(rows: List[Dict], notes: List[str], baseline: str) -> str:
    """ablation.md: the scores table, then the differences from the baseline, then the notes."""
    lines = ["# Ablation", "",
             "| variant | attention | seeds | mAP@0.5 | mAP@0.5:0.95 | APs | APm | APl | params | GFLOPs "
             "| latency (ms) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['attention']} | {r['seeds']} | {_pm(r['map50'], r['map50_std'])} | "
                     f"{_pm(r['map50_95'], r['map50_95_std'])} | {' | '.join(_ap(r[k]) for k in SIZE_KEYS)} | "
                     f"{r['params']:,} | {r['gflops']:.3f} | {r['latency_ms']:.1f} |")
    boot_seeds = {r["bootstrap_seed"] for r in rows if r.get("bootstrap_seed") is not None}
    boot = f"bootstrap, seed {boot_seeds.pop()}" if len(boot_seeds) == 1 else "bootstrap"
    lines += ["", f"## Difference from {baseline} (variant - {baseline}, 95% intervals)", "",
              f"| variant | Δ mAP@0.5 (seeds) | Δ mAP@0.5:0.95 (seeds) | Δ mAP@0.5 ({boot}) "
              f"| Δ mAP@0.5:0.95 ({boot}) |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['variant']} | " + " | ".join(difference_cells(r, baseline)) + " |" for r in rows]
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def difference_points(rows: List[Dict], key: str, baseline: str) -> List[Tuple[int, float, float, float, bool]]:
    """(row index, diff, low, high, distinguishable) of every non-baseline row with a deciding interval."""
    points = []
    for i, row in enumerate(rows):
        interval = deciding_interval(row, key) if row["variant"] != baseline else None
        if interval is not None:
            points.append((i, *interval, bool(row[f"d_{key}_distinguishable"])))
    return points


def _draw_differences(ax, rows: List[Dict], baseline: str, seeds: int) -> None:
    """Each difference from the baseline with its deciding interval as error bar; filled and * when it excludes 0."""
    for offset, (key, label), colour in ((-0.15, METRICS[0], "tab:blue"), (0.15, METRICS[1], "tab:orange")):
        for n, (i, diff, low, high, marked) in enumerate(difference_points(rows, key, baseline)):
            # the bar spans [low, high] itself: a percentile interval need not hold the estimate
            ax.errorbar(i + offset, (low + high) / 2, yerr=(high - low) / 2, fmt="none", ecolor=colour, capsize=3)
            ax.plot(i + offset, diff, "o", color=colour, markerfacecolor=colour if marked else "white",
                    label=label if n == 0 else None)
            if marked:
                ax.annotate("*", (i + offset, high), ha="center", va="bottom", fontsize=14)
    ax.axhline(0.0, color="black", linewidth=0.8)
    what = f"t interval over {seeds} seeds" if seeds > 1 else "bootstrap over images, one seed"
    ax.set_title(f"difference from {baseline} (95% {what};\nfilled, *: excludes 0)")
    ax.set_xlim(-0.5, len(rows) - 0.5)
    if ax.get_legend_handles_labels()[0]:  # only the baseline finished: nothing drawn
        ax.legend(loc="best")


def chart_figure(rows: List[Dict], seeds: int, baseline: str):
    """ablation.png: mAP per variant, the differences from the baseline, and the CPU latency."""
    x = np.arange(len(rows))
    fig, (ax_map, ax_diff, ax_ms) = plt.subplots(1, 3, figsize=(max(12, 2.4 * len(rows) + 5), 4.8),
                                                 gridspec_kw={"width_ratios": [2, 2, 1]})
    for offset, (key, label) in zip((-0.2, 0.2), METRICS):
        errors = [r[f"{key}_std"] or 0.0 for r in rows] if seeds > 1 else None  # no spread from one seed
        ax_map.bar(x + offset, [r[key] for r in rows], 0.4, yerr=errors, capsize=3, label=label)
    ax_map.set_title(f"mAP by variant (mean ± std over {seeds} seeds)" if seeds > 1 else "mAP by variant (one seed)")
    ax_map.set_ylim(0, 1.15)  # room for the legend above the bars
    ax_map.legend(loc="upper center", ncol=2)
    _draw_differences(ax_diff, rows, baseline, seeds)
    ax_ms.bar(x, [r["latency_ms"] for r in rows], 0.6, color="tab:gray")
    ax_ms.set_title("CPU latency, batch 1 (ms)")
    for ax in (ax_map, ax_diff, ax_ms):
        ax.set_xticks(x, [shown_name(r["variant"], r["attention"]) for r in rows], rotation=30, ha="right")
    fig.tight_layout()
    return fig


def per_class_figure(classes: List[str], table: Dict[str, List[Optional[float]]], baseline: str):
    """Heat map of the per-class differences: diverging colours centred on 0, each value written in its cell."""
    values = np.array([[np.nan if d is None else d for d in diffs] for diffs in table.values()], dtype=float).T
    values = values.reshape(len(classes), len(table))
    limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.0
    limit = limit or 1e-3  # all zero: any symmetric range keeps 0 in the middle
    fig, ax = plt.subplots(figsize=(2 + 1.3 * max(1, len(table)), 1.5 + 0.45 * max(1, len(classes))))
    if not values.size:
        ax.text(0.5, 0.5, f"no per-class AP to compare with {baseline}", ha="center", va="center")
        return fig
    cmap = plt.get_cmap("RdBu").with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-limit, vmax=limit, aspect="auto")
    for (c, v), value in np.ndenumerate(values):
        ink = "white" if abs(value) > 0.6 * limit else "black"  # readable on the dark ends of the scale
        ax.text(v, c, NA if np.isnan(value) else _signed(value, 3), ha="center", va="center", fontsize=8, color=ink)
    ax.set_xticks(np.arange(len(table)), list(table), rotation=30, ha="right")
    ax.set_yticks(np.arange(len(classes)), classes)
    ax.set_title(f"AP@0.5 difference from {baseline} per class (mean over seeds)")
    fig.colorbar(image, ax=ax)
    return fig


def write_outputs(out: Path, rows: List[Dict], records: List[Dict], notes: List[str], baseline: str,
                  seeds: int) -> List[Path]:
    """Write ablation.md, .csv, .png and ablation_per_class.csv, .png into `out`; returns their paths."""
    paths = [out / f"ablation{name}" for name in (".md", ".csv", ".png", "_per_class.csv", "_per_class.png")]
    classes, per_class = per_class_differences(records, [r["variant"] for r in rows], baseline)
    write_text_atomic(paths[0], markdown_text(rows, notes, baseline))
    write_csv(rows, paths[1])
    save_figure(chart_figure(rows, seeds, baseline), paths[2])
    write_per_class_csv(classes, per_class, paths[3])
    shown = {r["variant"]: shown_name(r["variant"], r["attention"]) for r in rows}  # as on ablation.png
    save_figure(per_class_figure(classes, {shown[k]: v for k, v in per_class.items()}, shown.get(baseline, baseline)),
                paths[4])
    return paths


def config_differences(records: List[Dict]) -> List[str]:
    """Training settings (from each run's checkpoint) that are not the same in every run; a setting an older
    run does not record (it predates the flag, so it ran with the flag's default) is not counted."""
    configs = [r.get("train_config", {}) for r in records]
    keys = sorted({k for c in configs for k in c})
    return [k for k in keys if len({json.dumps(c[k]) for c in configs if k in c}) > 1]


def table_notes(args, command: str, records: List[Dict], budget: List[str], threads: int, data: str) -> List[str]:
    """The notes under the tables on what was run and scored (args: ablate.py's; data: the dataset resolved)."""
    first = records[0]
    notes = [f"command: `{command}`", f"train.py flags shared by every run: `{shlex.join(budget)}`",
             f"scored: last.pth of each run on {data}, split {first['eval_split']} ({first['eval_images']} images) with "
             f"get_map.py's defaults (amp {first.get('eval_amp', 'auto')}); mAP is the mean over seeds, "
             "± the sample standard deviation",
             "APs/APm/APl: COCO AP@[.5:.95] on small (area < 32²), medium (32² to 96²) and large (> 96²) objects, "
             "mean over seeds; n/a: the split has no object of that size",
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


def interval_notes(rows: List[Dict], baseline: str, reps: int, images: int) -> List[str]:
    """The notes that say which interval each difference column is, and what it does not cover."""
    compared = [r for r in rows if r["variant"] != baseline and r.get("paired_seeds")]
    if not compared:
        return [f"no variant shares a seed with the baseline {baseline}: no difference to show"]
    pairs = max(len(r["paired_seeds"].split()) for r in compared)
    notes = [f"Δ: variant minus {baseline}. (seeds) columns: 95% Student t interval of the per-seed differences "
             f"over the seeds both variants finished ({pairs} here; ablation.csv: paired_seeds); runs of one "
             "seed share the data order and the initial weights outside the attention blocks"]
    if reps > 0:
        notes.append(f"(bootstrap) columns: 95% percentile interval over {reps} resamples of the {images} validation "
                     "images, both variants scored on the same resampled images, for one seed's pair (the lowest "
                     "seed both finished); it covers which images were drawn, not training noise, so with one seed "
                     "it understates the uncertainty")
    else:
        notes.append("no bootstrap interval (--bootstrap 0)")
    notes.append("*: the deciding interval (over seeds with 2 or more, else the bootstrap) excludes 0: the difference "
                 "is distinguishable from zero for this training budget and this validation set, not across "
                 "datasets; an interval containing 0 means not distinguishable, not equal")
    notes.append(f"{2 * len(compared)} differences are shown: at 95%, about {0.05 * 2 * len(compared):.1f} of them "
                 "exclude 0 by chance even where nothing differs")
    return notes
