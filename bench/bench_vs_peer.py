"""Our default training recipe against ultralytics peers, each from its model yaml with no weights, on the same data.

    python bench/bench_vs_peer.py                              # demo and alt, 320 px, 25 epochs, batch 8, YOLOv8n
    python bench/bench_vs_peer.py --peer-model yolov8n.yaml yolo11n.yaml yolo26n.yaml   # three peers
    python bench/bench_vs_peer.py --epochs 1 --max-images 16   # smoke run
    python bench/bench_vs_peer.py --skip-peer --ours before="--progressive-size 0" ours   # two recipes of ours

For each dataset, every model trains from scratch with the same image size, epochs, batch, workers and
torch threads, one after the other, each timed by the wall clock of its training process (issues 9, 17):
  * ours: `train.py` with its default recipe (only data, size, epochs, batch, workers and run folder are
    passed, and `--eval-period EPOCHS --no-val-loss`: validated once, after the last epoch, as the peers
    with val=False), scored from last.pth; each --ours variant (default: one, `ours`) adds its own train.py
    flags after those, which win (an --epochs of its own included);
  * each peer of --peer-model (default: yolov8n.yaml; named by the yaml's stem: yolov8n, yolo11n,
    yolo26n): built from its yaml with random weights, ultralytics' own defaults with val=False (it still
    validates once after the last epoch and once in its final_eval; on CPU it forces 0 loader workers),
    trained by bench/peer_ultralytics.py in its own virtual environment (--peer-venv, which sees this
    interpreter's packages, torch included; created and filled by bench/peer_setup.py, never a
    dependency of the project) on
    the dataset converted to YOLO format (difficult objects left out, as our loader does), scored from last.pt.
All are scored by our evaluator (utils.eval.evaluator) on the dataset's val split from detections at
confidence 0.001, class-aware NMS at IoU 0.5 and at most 300 boxes per image (our NMS settings; the
peers' own predict default is IoU 0.7; a peer with an NMS-free end-to-end head, as yolo26n, is scored
from its one-to-many head with this same NMS, ultralytics' default), in original-image pixels.

Finished runs are reused: results/<dataset>-<model>-<settings>.json is written after scoring and
results/<...>.train.json after training, so an interrupted bench continues where it stopped.
The table, one row per (dataset, model), goes to stdout and, atomically, to <out>/bench_vs_peer.md and .json.
"""
import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.core.config import read_classes  # noqa: E402
from utils.eval.evaluator import CONF_THRES, NMS_THRES  # noqa: E402
from utils.core.fileio import write_json_atomic, write_text_atomic  # noqa: E402
from utils.data.voc import REPO_ROOT, Sample  # noqa: E402
from bench.peer_setup import convert_to_yolo, ensure_peer_venv, yolo_val_images  # noqa: E402
from bench.peer_table import MAX_DET, format_table, table_notes, write_outputs  # noqa: E402, F401

DATASETS = {"demo": "model_data/demo_classes.txt", "alt": "model_data/demo_alt_classes.txt"}  # demo style -> classes
PEER_SCRIPT = Path(__file__).resolve().with_name("peer_ultralytics.py")
PEER_PACKAGE = "ultralytics==8.4.190"  # the version whose offline behaviour peer_ultralytics.py was checked against
DEFAULT_PEER = "yolov8n.yaml"
# train.py flags an --ours variant may not give: the shared data and input size, and the run folder it is scored from
BENCH_OWNS = ("--data", "--data-format", "--images", "--classes", "--input-size", "--imgsz", "--name", "--save-dir",
              "--resume")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--datasets", type=parse_datasets, default="demo,alt",
      help=f"comma-separated demo styles, of {', '.join(DATASETS)} (default: demo,alt)")
    a("--input-size", type=int, default=320, help="image size for training and scoring (default: 320)")
    a("--epochs", type=int, default=25, help="training epochs of every model (default: 25)")
    a("--batch-size", type=int, default=8, help="batch size of every model (default: 8)")
    a("--workers", type=int, default=2, help="loader workers asked of all (ultralytics uses 0 on CPU) (default: 2)")
    a("--threads", type=int, default=os.cpu_count() or 1, help="OMP/torch threads of every process (default: all cores)")
    a("--max-images", type=int, default=0, help="only the first N train and N val images, for smoke runs (default: 0: all)")
    a("--out", default=None, help="folder of runs, converted data, results, table (default: bench/out/peer in the repo)")
    a("--ours", nargs="+", type=parse_ours, default=[("ours", "")], metavar="NAME[=FLAGS]",
      help="our model's variants, each trained with train.py's default recipe and the shared settings, then its "
           "FLAGS (which win), e.g. --ours before='--epochs 25 --progressive-size 0' ours (default: ours)")
    a("--skip-ours", action="store_true", help="do not train or score our model")
    a("--peer-model", nargs="+", type=parse_peer_model, default=[DEFAULT_PEER], metavar="YAML",
      help=f"ultralytics model yamls to compare, each built with random weights (default: {DEFAULT_PEER})")
    a("--skip-peer", action="store_true", help="do not train or score any peer")
    a("--peer-venv", default=None, help="virtual environment for ultralytics (default: bench/.venv-peer in the repo)")
    a("--peer-package", default=PEER_PACKAGE, help=f"pip requirement installed into it (default: {PEER_PACKAGE})")
    return p


def parse_datasets(text: str) -> List[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown dataset(s) {unknown or text!r}; valid: {', '.join(DATASETS)}")
    return names


def parse_ours(text: str) -> Tuple[str, str]:
    """(name, train.py flags) of one --ours variant, 'NAME' or 'NAME=FLAGS'."""
    name, _, flags = text.partition("=")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise argparse.ArgumentTypeError(f"--ours {text!r}: expected NAME or NAME=FLAGS, NAME of letters, digits, "
                                         "- and _")
    try:
        words = shlex.split(flags)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--ours {text!r}: {e}") from None
    owned = [w for w in words if w.split("=")[0] in BENCH_OWNS]
    if owned:
        raise argparse.ArgumentTypeError(f"--ours {text!r}: {owned[0].split('=')[0]} is the bench's own (every model "
                                         "is trained on the same data and scored at the same size from its run folder)")
    return name, flags.strip()


def parse_peer_model(text: str) -> str:
    """An ultralytics model yaml: a name it ships (yolo11n.yaml) or a file path, absolute as the peer runs elsewhere."""
    if Path(text).suffix not in (".yaml", ".yml") or Path(text).stem == "ours":
        raise argparse.ArgumentTypeError(f"expected an ultralytics model yaml such as yolo11n.yaml, got {text!r}")
    return str(Path(text).resolve()) if Path(text).is_file() else text


def ours_variants(variants: Sequence[Tuple[str, str]], peers: Dict[str, str]) -> Dict[str, str]:
    """{name: flags} of the --ours variants; a name given twice or a peer's is refused (they name result files)."""
    ours: Dict[str, str] = {}
    for name, flags in variants:
        if name in ours or name in peers:
            raise ValueError(f"--ours: the name {name!r} is taken (by {'a peer' if name in peers else 'another'}); "
                             "rename one")
        ours[name] = flags
    return ours


def peer_models(yamls: Sequence[str]) -> Dict[str, str]:
    """{model name (the yaml's stem): yaml}; two yamls with one stem would share result files, so that is refused."""
    peers: Dict[str, str] = {}
    for yaml in yamls:
        name = Path(yaml).stem
        if name in peers:
            raise ValueError(f"--peer-model {peers[name]} and {yaml} are both named {name!r}; rename one")
        peers[name] = yaml
    return peers


@dataclass(frozen=True)
class Settings:
    """What every model shares; the tag names a result file."""

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


def train_ours(dataset: Dataset, settings: Settings, out: Path, key: str, flags: str = "") -> Dict:
    """train.py with its default recipe, then `flags`; returns the training record (weights, wall seconds)."""
    runs = out / "runs"
    shutil.rmtree(runs / key, ignore_errors=True)  # an unfinished earlier attempt
    cmd = [sys.executable, "train.py", "--data", dataset.path, "--classes", dataset.classes_file,
           "--input-size", settings.input_size, "--epochs", settings.epochs, "--batch-size", settings.batch_size,
           "--workers", settings.workers, "--eval-period", settings.epochs, "--no-val-loss", "--name", key,
           "--save-dir", runs.resolve(), "--quiet", *shlex.split(flags)]
    seconds = run_logged(cmd, runs / f"{key}.log", process_env(settings.threads), REPO_ROOT)
    return {"weights": str(runs / key / "last.pth"), "train_wall_s": seconds, "ours_flags": flags}


def train_peer(python: Path, model_yaml: str, data_yaml: Path, settings: Settings, out: Path, key: str) -> Dict:
    """The peer from `model_yaml` in the peer venv; returns the training record (weights, wall seconds, info)."""
    runs = out / "runs"
    shutil.rmtree(runs / key, ignore_errors=True)
    info = runs / f"{key}.info.json"
    cmd = [python, PEER_SCRIPT, "train", "--model", model_yaml, "--data", data_yaml.resolve(),
           "--imgsz", settings.input_size, "--epochs", settings.epochs, "--batch", settings.batch_size,
           "--workers", settings.workers, "--project", runs.resolve(), "--name", key, "--info", info.resolve(),
           "--threads", settings.threads]
    seconds = run_logged(cmd, runs / f"{key}.log", process_env(settings.threads), out)
    record = json.loads(info.read_text(encoding="utf-8"))
    return {"weights": record["weights"], "train_wall_s": seconds, "ultralytics": record["ultralytics"],
            "model_yaml": model_yaml, "own_map50": record["own_map50"], "own_map50_95": record["own_map50_95"],
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
        self.peers = peer_models(args.peer_model)  # {name: yaml}
        self.ours = ours_variants(args.ours, self.peers)  # {name: train.py flags}
        self._python: Optional[Path] = None
        self._converted: Dict[str, Path] = {}  # dataset name -> data.yaml

    def peer_python(self) -> Path:
        if self._python is None:
            self._python = ensure_peer_venv(self.venv, self.args.peer_package)
        return self._python

    def yolo_root(self, dataset: Dataset) -> Path:
        return self.out / "yolo" / (dataset.path.name if self.settings.max_images else dataset.name)

    def convert(self, dataset: Dataset) -> Path:
        """data.yaml of `dataset` in YOLO format, written afresh once per invocation, shared by every peer."""
        if dataset.name not in self._converted:
            splits = {split: load_split(dataset, split) for split in ("train", "val")}
            self._converted[dataset.name] = convert_to_yolo(splits, dataset.class_names, self.yolo_root(dataset))
        return self._converted[dataset.name]

    def train(self, dataset: Dataset, model: str, key: str) -> Dict:
        """The training record of `key`: reused when finished earlier, else trained now."""
        record_file = self.out / "results" / f"{key}.train.json"
        record = read_json(record_file)
        if record is not None and Path(record["weights"]).is_file() and self.same_flags(model, record):
            print(f"  reusing the finished training of {key} ({record_file})")
            return record
        if model in self.ours:
            record = train_ours(dataset, self.settings, self.out, key, self.ours[model])
        else:
            python = self.peer_python()
            record = train_peer(python, self.peers[model], self.convert(dataset), self.settings, self.out, key)
        write_json_atomic(record_file, record)
        return record

    def score(self, dataset: Dataset, model: str, key: str, record: Dict) -> Dict:
        val = load_split(dataset, "val")
        if model in self.ours:
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

    def same_flags(self, model: str, record: Dict) -> bool:
        """Whether a finished record of `model` ran with today's flags (a variant of ours may be given new ones)."""
        return model not in self.ours or record.get("ours_flags", "") == self.ours[model]

    def run(self, dataset: Dataset, model: str) -> Dict:
        """The result row of (dataset, model): reused from results/<key>.json, or trained and scored now."""
        key = run_key(dataset.name, model, self.settings)
        result_file = self.out / "results" / f"{key}.json"
        row = read_json(result_file)
        if row is not None and self.same_flags(model, row):
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


def main(args: argparse.Namespace) -> None:
    import torch

    if args.skip_ours and args.skip_peer:
        raise SystemExit("--skip-ours and --skip-peer together leave nothing to run; drop one")
    torch.set_num_threads(args.threads)
    bench = Bench(args)
    (bench.out / "results").mkdir(parents=True, exist_ok=True)
    models = ([] if args.skip_ours else list(bench.ours)) + ([] if args.skip_peer else list(bench.peers))
    rows = []
    for name in args.datasets:
        dataset = prepare_dataset(name, args.max_images, bench.out)
        rows.extend(bench.run(dataset, model) for model in models)
    print("\n" + write_outputs(rows, bench.settings, bench.out), end="")
    print(f"(also in {bench.out / 'bench_vs_peer.md'} and .json)")


if __name__ == "__main__":
    main(make_parser().parse_args())
