"""Our default training recipe against YOLOv8n (ultralytics, from yolov8n.yaml, no weights) on the same data (issue 9).

    python bench/bench_vs_peer.py                              # demo and alt datasets, 320 px, 25 epochs, batch 8
    python bench/bench_vs_peer.py --epochs 1 --max-images 16   # smoke run

For each dataset, both models train from scratch with the same image size, epochs, batch, workers and
torch threads, one after the other, each timed by the wall clock of its training process:
  * ours: `train.py` with its default recipe (only data, size, epochs, batch, workers and run folder are
    passed; no per-epoch evaluation), scored from last.pth;
  * YOLOv8n: ultralytics' own defaults with val=False (it still validates once after the last epoch
    and once in its final_eval; on CPU it forces 0 loader workers), trained by bench/peer_yolov8.py in
    its own virtual environment (--peer-venv, made with --system-site-packages so it reuses this
    torch; created and filled by this script, never a dependency of the project) on the dataset
    converted to YOLO format (difficult objects left out, as our loader does), scored from last.pt.
Both are scored by our evaluator (utils.eval.evaluator) on the dataset's val split from detections at
confidence 0.001, class-aware NMS at IoU 0.5 and at most 300 boxes per image (our NMS settings; the
peer's own predict default is IoU 0.7), in original-image pixels.

Finished runs are reused: results/<dataset>-<model>-<settings>.json is written after scoring and
results/<...>.train.json after training, so an interrupted bench continues where it stopped.
The table goes to stdout and, atomically, to <out>/bench_vs_peer.md and .json.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.core.config import read_classes  # noqa: E402
from utils.eval.evaluator import CONF_THRES, NMS_THRES  # noqa: E402
from utils.core.fileio import write_json_atomic, write_text_atomic  # noqa: E402
from utils.data.voc import REPO_ROOT, Sample  # noqa: E402

DATASETS = {"demo": "model_data/demo_classes.txt", "alt": "model_data/demo_alt_classes.txt"}  # demo style -> classes
MODELS = ("ours", "yolov8n")
PEER_SCRIPT = Path(__file__).resolve().with_name("peer_yolov8.py")
PEER_PACKAGE = "ultralytics==8.4.190"  # the version whose offline behaviour peer_yolov8.py was checked against
MAX_DET = 300


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--datasets", type=parse_datasets, default="demo,alt",
      help=f"comma-separated demo styles, of {', '.join(DATASETS)} (default: demo,alt)")
    a("--input-size", type=int, default=320, help="image size for training and scoring (default: 320)")
    a("--epochs", type=int, default=25, help="training epochs of both models (default: 25)")
    a("--batch-size", type=int, default=8, help="batch size of both models (default: 8)")
    a("--workers", type=int, default=2, help="loader workers asked of both (ultralytics uses 0 on CPU) (default: 2)")
    a("--threads", type=int, default=os.cpu_count() or 1, help="OMP/torch threads of every process (default: all cores)")
    a("--max-images", type=int, default=0, help="only the first N train and N val images, for smoke runs (default: 0: all)")
    a("--out", default=None, help="folder of runs, converted data, results, table (default: bench/out/peer in the repo)")
    a("--skip-ours", action="store_true", help="do not train or score our model")
    a("--skip-peer", action="store_true", help="do not train or score YOLOv8n")
    a("--peer-venv", default=None, help="virtual environment for ultralytics (default: bench/.venv-peer in the repo)")
    a("--peer-package", default=PEER_PACKAGE, help=f"pip requirement installed into it (default: {PEER_PACKAGE})")
    return p


def parse_datasets(text: str) -> List[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown dataset(s) {unknown or text!r}; valid: {', '.join(DATASETS)}")
    return names


@dataclass(frozen=True)
class Settings:
    """What both models share; the tag names a result file."""

    input_size: int
    epochs: int
    batch_size: int
    workers: int
    threads: int
    max_images: int

    def tag(self) -> str:
        tag = f"s{self.input_size}-e{self.epochs}-b{self.batch_size}-w{self.workers}-t{self.threads}"
        return tag + (f"-n{self.max_images}" if self.max_images else "")


def run_key(dataset: str, model: str, settings: Settings) -> str:
    return f"{dataset}-{model}-{settings.tag()}"


@dataclass
class Dataset:
    name: str
    path: Path  # VOC year folder with train and val splits
    classes_file: Path
    class_names: List[str]


def prepare_dataset(name: str, max_images: int, out: Path) -> Dataset:
    """The demo dataset `name` (generated if absent), or a VOC folder of its first `max_images` per split."""
    from utils.data.demo_data import ensure_demo_dataset

    path = ensure_demo_dataset(style=name)
    if max_images:
        path = write_subset(path, out / "data" / f"{name}-n{max_images}", max_images)
    classes_file = REPO_ROOT / DATASETS[name]
    return Dataset(name, path, classes_file, read_classes(classes_file))


def write_subset(data: Path, dst: Path, max_images: int) -> Path:
    """A VOC year folder linking to `data`'s Annotations and JPEGImages, with splits cut to `max_images`."""
    (dst / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for sub in ("Annotations", "JPEGImages"):
        if not (dst / sub).exists():
            (dst / sub).symlink_to((data / sub).resolve(), target_is_directory=True)
    for split in ("train", "val"):
        stems = (data / "ImageSets" / "Main" / f"{split}.txt").read_text(encoding="utf-8").split()[:max_images]
        write_text_atomic(dst / "ImageSets" / "Main" / f"{split}.txt", "\n".join(stems) + "\n")
    return dst


def load_split(dataset: Dataset, split: str) -> List[Sample]:
    from utils.data.voc import load_samples

    return load_samples(dataset.path, split, dataset.class_names)


def yolo_label_lines(sample: Sample) -> List[str]:
    """'class cx cy w h' per non-difficult box, normalised by the image size and clipped to [0, 1]."""
    keep = ~np.asarray(sample.difficult, dtype=bool)
    boxes = np.asarray(sample.boxes, dtype=np.float64).reshape(-1, 4)[keep]
    scale = np.array([sample.width, sample.height, sample.width, sample.height], dtype=np.float64)
    boxes = np.clip(boxes / scale, 0.0, 1.0)
    lines = []
    for (x1, y1, x2, y2), label in zip(boxes, np.asarray(sample.labels)[keep]):
        lines.append(f"{int(label)} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}")
    return lines


def yolo_data_yaml(root: Path, class_names: Sequence[str]) -> str:
    """An ultralytics detection data YAML for images/{train,val} under `root` (JSON is valid YAML)."""
    return json.dumps({"path": str(root.resolve()), "train": "images/train", "val": "images/val",
                       "names": list(class_names)}, indent=1) + "\n"


def write_yolo_image(sample: Sample, dst: Path) -> None:
    """Copy the image (a link could be re-saved: ultralytics fixes corrupt JPEGs); re-encode it when EXIF turns it."""
    from utils.ops.image import exif_rotates, open_image, read_image

    with open_image(sample.image_path) as image:
        rotates = exif_rotates(image)
    if rotates:  # write the pixels of the frame the boxes are in, with no EXIF left to disagree about
        import cv2
        pixels = read_image(sample.image_path, apply_exif=sample.exif_transpose)
        cv2.imwrite(str(dst.with_suffix(".png")), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
        return
    shutil.copyfile(sample.image_path, dst)


def convert_to_yolo(splits: Dict[str, List[Sample]], class_names: Sequence[str], root: Path) -> Path:
    """Write `root`/images/<split>/, labels/<split>/ and data.yaml (from scratch); returns data.yaml."""
    shutil.rmtree(root, ignore_errors=True)
    for split, samples in splits.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i, sample in enumerate(samples):
            stem = f"{i:05d}_{Path(sample.image_path).stem}"
            write_yolo_image(sample, root / "images" / split / (stem + Path(sample.image_path).suffix.lower()))
            lines = yolo_label_lines(sample)
            (root / "labels" / split / f"{stem}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    (root / "data.yaml").write_text(yolo_data_yaml(root, class_names), encoding="utf-8")
    return root / "data.yaml"


def yolo_val_images(root: Path) -> List[Path]:
    """The converted val images, in sample order (their names start with the sample index)."""
    return sorted((root / "images" / "val").iterdir())


def ensure_peer_venv(venv: Path, package: str) -> Path:
    """The venv's python with `package` installed: created with --system-site-packages (reuses torch) on first use."""
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not python.exists():
        print(f"creating {venv} (--system-site-packages)")
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    check = [str(python), "-c", "import importlib.metadata as m; print(m.version('ultralytics'))"]
    found = subprocess.run(check, capture_output=True, text=True)
    wanted = package.split("==")[1] if "==" in package else None
    if found.returncode != 0 or (wanted and found.stdout.strip() != wanted):
        print(f"installing {package} into {venv}")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", package], check=True)
    return python


def process_env(threads: int) -> Dict[str, str]:
    """Environment of the training/detection processes: the same thread count, ultralytics kept offline."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), YOLO_OFFLINE="1", YOLO_AUTOINSTALL="false")


def run_logged(cmd: Sequence[str], log: Path, env: Dict[str, str], cwd: Path) -> float:
    """Run `cmd` with its output in `log`; returns its wall-clock seconds; raises with the log's tail on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"  $ {' '.join(str(c) for c in cmd)}\n    (log: {log})", flush=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        rc = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd).returncode
    seconds = time.perf_counter() - start
    if rc != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:])
        raise RuntimeError(f"{cmd[1]} exited with {rc} after {seconds:.0f}s; last lines of {log}:\n{tail}")
    return seconds


def train_ours(dataset: Dataset, settings: Settings, out: Path, key: str) -> Dict:
    """train.py with its default recipe; returns the training record (weights, wall seconds)."""
    runs = out / "runs"
    shutil.rmtree(runs / key, ignore_errors=True)  # an unfinished earlier attempt
    cmd = [sys.executable, "train.py", "--data", dataset.path, "--classes", dataset.classes_file,
           "--input-size", settings.input_size, "--epochs", settings.epochs, "--batch-size", settings.batch_size,
           "--workers", settings.workers, "--eval-period", 0, "--name", key, "--save-dir", runs.resolve(), "--quiet"]
    seconds = run_logged(cmd, runs / f"{key}.log", process_env(settings.threads), REPO_ROOT)
    return {"weights": str(runs / key / "last.pth"), "train_wall_s": seconds}


def train_peer(python: Path, data_yaml: Path, settings: Settings, out: Path, key: str) -> Dict:
    """YOLOv8n from yolov8n.yaml in the peer venv; returns the training record (weights, wall seconds, info)."""
    runs = out / "runs"
    shutil.rmtree(runs / key, ignore_errors=True)
    info = runs / f"{key}.info.json"
    cmd = [python, PEER_SCRIPT, "train", "--data", data_yaml.resolve(), "--imgsz", settings.input_size,
           "--epochs", settings.epochs, "--batch", settings.batch_size, "--workers", settings.workers,
           "--project", runs.resolve(), "--name", key, "--info", info.resolve(), "--threads", settings.threads]
    seconds = run_logged(cmd, runs / f"{key}.log", process_env(settings.threads), out)
    record = json.loads(info.read_text(encoding="utf-8"))
    return {"weights": record["weights"], "train_wall_s": seconds, "ultralytics": record["ultralytics"],
            "own_map50": record["own_map50"], "own_map50_95": record["own_map50_95"],
            "train_network_attempts": record["network_attempts"]}


def peer_detections(python: Path, weights: str, images: List[Path], settings: Settings, out: Path, key: str) -> Dict:
    """The peer's detections on `images` at confidence CONF_THRES: {'detections': [ndarray[K, 6]], ...info}."""
    runs = out / "runs"
    listing, result = runs / f"{key}.val-images.txt", runs / f"{key}.detections.json"
    listing.write_text("".join(f"{p.resolve()}\n" for p in images), encoding="utf-8")
    cmd = [python, PEER_SCRIPT, "predict", "--weights", weights, "--images", listing.resolve(),
           "--out", result.resolve(), "--imgsz", settings.input_size, "--conf", CONF_THRES, "--iou", NMS_THRES,
           "--max-det", MAX_DET, "--threads", settings.threads]
    run_logged(cmd, runs / f"{key}.predict.log", process_env(settings.threads), out)
    found = json.loads(result.read_text(encoding="utf-8"))
    found["detections"] = detections_from_lists(found["detections"])
    return found


def detections_from_lists(rows: Sequence[Sequence[Sequence[float]]]) -> List[np.ndarray]:
    """JSON lists of [x1, y1, x2, y2, score, class] per image -> float32 arrays [K, 6]."""
    return [np.asarray(r, dtype=np.float32).reshape(-1, 6) for r in rows]


def score_ours(weights: str, samples: List[Sample], class_names: Sequence[str], input_size: int) -> Dict:
    """mAP of our checkpoint on `samples` with our detector and evaluator; also its parameter count."""
    from utils.engine.checkpoint import model_from_weights
    from utils.eval.evaluator import evaluate_model

    model, meta = model_from_weights(weights)
    result = evaluate_model(model, samples, class_names, input_size, meta["anchors"], meta["anchors_mask"],
                            conf_thres=CONF_THRES, scale_x_y=meta["scale_x_y"], progress=False)
    return {"map50": result["map50"], "map50_95": result["map50_95"],
            "params": sum(p.numel() for p in model.parameters())}


def score_detections(detections: List[np.ndarray], samples: List[Sample], class_names: Sequence[str]) -> Dict:
    from utils.eval.evaluator import evaluate_detections

    result = evaluate_detections(detections, samples, class_names, metric="all")
    return {"map50": result["map50"], "map50_95": result["map50_95"]}


def read_json(path: Path) -> Optional[Dict]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


class Bench:
    """One bench invocation: settings, output folder, and the peer venv (made on first need)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.settings = Settings(args.input_size, args.epochs, args.batch_size, args.workers, args.threads,
                                 args.max_images)
        self.out = Path(args.out).resolve() if args.out else REPO_ROOT / "bench" / "out" / "peer"
        self.venv = Path(args.peer_venv).resolve() if args.peer_venv else REPO_ROOT / "bench" / ".venv-peer"
        self._python: Optional[Path] = None

    def peer_python(self) -> Path:
        if self._python is None:
            self._python = ensure_peer_venv(self.venv, self.args.peer_package)
        return self._python

    def yolo_root(self, dataset: Dataset) -> Path:
        return self.out / "yolo" / (dataset.path.name if self.settings.max_images else dataset.name)

    def convert(self, dataset: Dataset) -> Path:
        splits = {split: load_split(dataset, split) for split in ("train", "val")}
        return convert_to_yolo(splits, dataset.class_names, self.yolo_root(dataset))

    def train(self, dataset: Dataset, model: str, key: str) -> Dict:
        """The training record of `key`: reused when finished earlier, else trained now."""
        record_file = self.out / "results" / f"{key}.train.json"
        record = read_json(record_file)
        if record is not None and Path(record["weights"]).is_file():
            print(f"  reusing the finished training of {key} ({record_file})")
            return record
        if model == "ours":
            record = train_ours(dataset, self.settings, self.out, key)
        else:
            python = self.peer_python()
            record = train_peer(python, self.convert(dataset), self.settings, self.out, key)
        write_json_atomic(record_file, record)
        return record

    def score(self, dataset: Dataset, model: str, key: str, record: Dict) -> Dict:
        val = load_split(dataset, "val")
        if model == "ours":
            return score_ours(record["weights"], val, dataset.class_names, self.settings.input_size)
        if not (self.yolo_root(dataset) / "data.yaml").is_file():
            self.convert(dataset)
        images = yolo_val_images(self.yolo_root(dataset))
        if len(images) != len(val):
            raise RuntimeError(f"{len(images)} converted val images for {len(val)} val samples; delete "
                               f"{self.yolo_root(dataset)} and run again")
        found = peer_detections(self.peer_python(), record["weights"], images, self.settings, self.out, key)
        return {**score_detections(found["detections"], val, dataset.class_names), "params": found["params"],
                "detect_settings": found["settings"], "predict_network_attempts": found["network_attempts"]}

    def run(self, dataset: Dataset, model: str) -> Dict:
        """The result row of (dataset, model): reused from results/<key>.json, or trained and scored now."""
        key = run_key(dataset.name, model, self.settings)
        result_file = self.out / "results" / f"{key}.json"
        row = read_json(result_file)
        if row is not None:
            print(f"{key}: reusing {result_file}")
            return row
        print(f"{key}: training and scoring", flush=True)
        record = self.train(dataset, model, key)
        row = {"dataset": dataset.name, "model": model, "settings": asdict(self.settings), **record,
               **self.score(dataset, model, key, record)}
        write_json_atomic(result_file, row)
        print(f"{key}: AP50 {row['map50']:.4f}, AP50-95 {row['map50_95']:.4f}, "
              f"train {row['train_wall_s'] / 60:.1f} min", flush=True)
        return row


def format_table(rows: Sequence[Dict]) -> str:
    """A markdown table: dataset, model, AP50, AP50-95, train wall time, params."""
    lines = ["| dataset | model | AP50 | AP50-95 | train wall time | params |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        params = f"{r['params'] / 1e6:.2f} M" if r.get("params") else "-"
        lines.append(f"| {r['dataset']} | {r['model']} | {r['map50']:.3f} | {r['map50_95']:.3f} | "
                     f"{r['train_wall_s'] / 60:.1f} min | {params} |")
    return "\n".join(lines)


def table_notes(settings: Settings, rows: Sequence[Dict]) -> str:
    """One line of the shared settings, the peer's version and any network access it tried."""
    versions = sorted({r["ultralytics"] for r in rows if r.get("ultralytics")})
    attempts = [a for r in rows for a in r.get("train_network_attempts", []) + r.get("predict_network_attempts", [])]
    text = (f"{settings.input_size} px, {settings.epochs} epochs, batch {settings.batch_size}, "
            f"{settings.workers} workers asked, {settings.threads} threads"
            + (f", first {settings.max_images} train/val images" if settings.max_images else "")
            + f"; scored by utils.eval.evaluator at conf {CONF_THRES}, NMS IoU {NMS_THRES}, max {MAX_DET} boxes")
    if versions:
        text += f"; YOLOv8n: ultralytics {', '.join(versions)}, yolov8n.yaml from scratch, 0 workers on CPU"
        text += f"; network attempts refused: {attempts}" if attempts else "; no network access attempted"
        own = [f"{r['dataset']} {r['own_map50']:.3f}" for r in rows if r.get("own_map50") is not None]
        text += f"; YOLOv8n's own val AP50 of last.pt (its NMS IoU 0.7): {', '.join(own)}" if own else ""
    return text


def write_outputs(rows: List[Dict], settings: Settings, out: Path) -> str:
    """Write <out>/bench_vs_peer.md and .json atomically; returns the markdown."""
    text = format_table(rows) + "\n\n" + table_notes(settings, rows) + "\n"
    write_text_atomic(out / "bench_vs_peer.md", text)
    write_json_atomic(out / "bench_vs_peer.json", {"settings": asdict(settings), "rows": rows})
    return text


def main(args: argparse.Namespace) -> None:
    import torch

    if args.skip_ours and args.skip_peer:
        raise SystemExit("--skip-ours and --skip-peer together leave nothing to run; drop one")
    torch.set_num_threads(args.threads)
    bench = Bench(args)
    (bench.out / "results").mkdir(parents=True, exist_ok=True)
    models = [m for m in MODELS if not (m == "ours" and args.skip_ours or m == "yolov8n" and args.skip_peer)]
    rows = []
    for name in args.datasets:
        dataset = prepare_dataset(name, args.max_images, bench.out)
        rows.extend(bench.run(dataset, model) for model in models)
    print("\n" + write_outputs(rows, bench.settings, bench.out), end="")
    print(f"(also in {bench.out / 'bench_vs_peer.md'} and .json)")


if __name__ == "__main__":
    main(make_parser().parse_args())
