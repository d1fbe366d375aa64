"""Per-class AP with and without `train.py --cls-weights auto` on an imbalanced demo dataset (issue 31).

The demo dataset (utils/data/demo_data.py, generated into --out/demo_src so that the repository's copy is not
touched) is copied into --out/VOCrare with one class (--rare, default star) made --ratio times rarer in the
training split: every training image without that class is kept, and of the images holding it those (in the
split's order) that keep its object count within the mean count of the other classes in the kept images / --ratio. Whole images
are dropped, so that no object is left in a picture without its box. The validation split is the demo's own.

Then, for each seed, two runs of train.py on it (in processes of their own, one after the other): without class
weights and with --cls-weights auto (--cls-weights-power --power); each last.pth is scored on the validation
split as get_map.py scores it (utils.eval.scoring.evaluate, metric all), and a markdown table of AP50 and AP50-95
per class, per seed and their mean, is printed and written to --out/table.md (results.json beside it). A run whose
last.pth has finished its epochs is not trained again.

  python bench/bench_cls_weights.py --epochs 12 --input-size 256 --seeds 0 1
"""
import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.core.fileio import write_text_atomic  # noqa: E402
from utils.data.demo_data import STYLES, ensure_demo_dataset, read_demo_splits  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"none": [], "auto": ["--cls-weights", "auto"]}


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--out", default=str(ROOT / "runs" / "bench_cls_weights"), help="output folder (default runs/bench_cls_weights)")
    a("--rare", default="star", help="the class made rare (default star)")
    a("--ratio", type=float, default=10.0, help="how many times rarer than the mean of the others (default 10)")
    a("--epochs", type=int, default=12, help="epochs per run (default 12)")
    a("--input-size", type=int, default=256, help="training input size (default 256)")
    a("--seeds", type=int, nargs="+", default=[0, 1], help="seeds, each run with and without weights (default 0 1)")
    a("--power", type=float, default=1.0, help="--cls-weights-power of the weighted runs (default 1.0)")
    a("--prepare-only", action="store_true", help="write the imbalanced dataset and stop")
    return p


def counts(samples, num_classes: int) -> np.ndarray:
    total = np.zeros(num_classes, np.int64)
    for s in samples:
        total += np.bincount(s.labels[~s.difficult], minlength=num_classes)
    return total


def rare_split(train: list, rare: int, num_classes: int, ratio: float) -> list:
    """The training samples kept: all without the rare class, and those with it while it stays rare enough."""
    kept = [s for s in train if rare not in s.labels]
    for s in (s for s in train if rare in s.labels):
        total = counts(kept + [s], num_classes)
        if total[rare] * ratio <= np.delete(total, rare).mean():  # still `ratio` times rarer with this image
            kept.append(s)
    return sorted(kept, key=lambda s: Path(s.image_path).stem)


def prepare(out: Path, rare_name: str, ratio: float) -> Path:
    """Write out/VOCrare (train: the imbalanced split; val: the demo's) and return it."""
    classes = STYLES["demo"].classes
    if rare_name not in classes:
        raise SystemExit(f"--rare {rare_name}: not a demo class; choose one of {', '.join(classes)}")
    voc = ensure_demo_dataset(out / "demo_src")
    splits = read_demo_splits(voc, classes)
    chosen = {"train": rare_split(splits["train"], classes.index(rare_name), len(classes), ratio),
              "val": splits["val"]}
    dest = out / "VOCrare"
    if dest.exists():
        shutil.rmtree(dest)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (dest / sub).mkdir(parents=True)
    for split, samples in chosen.items():
        stems = [Path(s.image_path).stem for s in samples]
        for s, stem in zip(samples, stems):
            shutil.copy2(s.image_path, dest / "JPEGImages" / Path(s.image_path).name)
            shutil.copy2(voc / "Annotations" / f"{stem}.xml", dest / "Annotations" / f"{stem}.xml")
        (dest / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(stems) + "\n")
        per_class = counts(samples, len(classes))
        print(f"{split}: {len(samples)} images; objects " + ", ".join(f"{c} {n}" for c, n in zip(classes, per_class)))
    (dest / "classes.txt").write_text("\n".join(classes) + "\n")
    return dest


def train_command(data: Path, logs: Path, name: str, variant: str, seed: int, args) -> List[str]:
    extra = VARIANTS[variant] + (["--cls-weights-power", str(args.power)] if variant == "auto" else [])
    return [sys.executable, str(ROOT / "train.py"), "--data", str(data), "--classes", str(data / "classes.txt"),
            "--train-split", "train", "--val-split", "val", "--epochs", str(args.epochs), "--input-size",
            str(args.input_size), "--eval-period", "0", "--no-val-loss", "--seed", str(seed), "--save-dir", str(logs),
            "--name", name, "--quiet", *extra]  # scored once afterwards (score), so no evaluation during the run


def finished(run: Path, epochs: int) -> bool:
    if not (run / "last.pth").is_file():
        return False
    from utils.engine.checkpoint import read_checkpoint
    return read_checkpoint(run / "last.pth")["epoch"] + 1 >= epochs


def score(run: Path, data: Path) -> Dict:
    from utils.eval.scoring import evaluate
    result = evaluate(weights=str(run / "last.pth"), data=str(data), split="val", classes=str(data / "classes.txt"),
                      metric="all", device="cpu")
    return {"map50": result["map50"], "map50_95": result["map50_95"],
            "per_class": [{"class": r["class"], "gts": r["gts"], "ap50": r["ap"], "ap50_95": r["ap50_95"]}
                          for r in result["per_class"]]}


def table(results: Dict, seeds: List[int]) -> str:
    """Markdown: per class (and the mean), AP50 and AP50-95 of each variant per seed, the means and the gain."""
    names = [r["class"] for r in results[f"none_s{seeds[0]}"]["per_class"]]
    head = ["class"] + [f"{m} {v} s{s}" for m in ("AP50", "AP50-95") for v in VARIANTS for s in seeds]
    head += [f"{m} {v} mean" for m in ("AP50", "AP50-95") for v in VARIANTS] + ["AP50 gain", "AP50-95 gain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [(i, n) for i, n in enumerate(names)] + [(None, "mAP")]
    for i, name in rows:
        def value(variant, seed, metric):
            r = results[f"{variant}_s{seed}"]
            return r[f"map{metric[2:]}"] if i is None else r["per_class"][i][metric]
        cells, means = [], {}
        for metric in ("ap50", "ap50_95"):
            for variant in VARIANTS:
                vals = [value(variant, s, metric) for s in seeds]
                cells += [f"{v:.3f}" for v in vals]
                means[metric, variant] = float(np.mean(vals))
        cells += [f"{means[m, v]:.3f}" for m in ("ap50", "ap50_95") for v in VARIANTS]
        cells += [f"{means[m, 'auto'] - means[m, 'none']:+.3f}" for m in ("ap50", "ap50_95")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    out = Path(args.out).resolve()
    data = prepare(out, args.rare, args.ratio)
    if args.prepare_only:
        return 0
    results = {}
    for seed in args.seeds:
        for variant in VARIANTS:
            name = f"{variant}_s{seed}"
            run = out / "logs" / name
            command = train_command(data, out / "logs", name, variant, seed, args)
            if not finished(run, args.epochs):
                if run.exists():
                    shutil.rmtree(run)
                print("$ " + " ".join(command[1:]), flush=True)
                subprocess.run(command, check=True, cwd=ROOT)
            results[name] = score(run, data)
            print(f"{name}: mAP50 {results[name]['map50']:.4f}, mAP50-95 {results[name]['map50_95']:.4f}", flush=True)
            write_text_atomic(out / "results.json", json.dumps(results, indent=1))
    text = table(results, args.seeds)
    write_text_atomic(out / "table.md", text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
