"""Score a detector (or a saved COCO results file) on a dataset split, as get_map.py does, from Python.

    from utils.eval.scoring import evaluate
    result = evaluate(weights="logs/exp/best.pth", data="VOCdevkit", split="VOC2007/test")
    result["map"], result["coco"]["map50_95"], result["per_class"][0]["ap"]

The keyword names are get_map.py's flags (`--score-thr` is `score_thr`), and so are the defaults: get_map.py,
YOLO.val and ablate.py call this module, so the numbers they report for one checkpoint are the same.
The result dict is utils.eval.evaluator.evaluate_detections's, its `settings` completed with what ran
(weights, input size, thresholds, device, backend, amp, data, split) and its `left_out` with the objects of
classes outside the class list. This module runs the network on torch; utils/deploy/graph_scoring.py passes
`score` a runner for ONNX graphs on ONNX Runtime or OpenVINO (get_map.py and YOLO.val score through it).
utils/eval/report.py prints and saves the result.
"""
from dataclasses import field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import numpy as np

from nets.checkpoint import load_detector, read_checkpoint
from utils.core.amp import amp_name, resolve_amp, select_device
from utils.core.cli import UserError
from utils.core.config import parse_input_size, read_classes
from utils.core.paths import MODEL_DATA, REPO_ROOT, default_weights
from utils.core.settings import check_overrides, settings_class, tool_settings
from utils.data.layouts import Dataset, open_dataset
from utils.data.voc import DatasetError, ScanStats, UnreadableImagesError, load_eval_samples, resolve_classes
from utils.eval import detect
from utils.eval import evaluator as ev
from utils.eval.coco_results import read_coco_file
from utils.ops.slicing import flag_slicing

RESULTS_BASE = REPO_ROOT / "map_out"  # results of weights outside a run folder, and of --detections


SCRIPT_ONLY = ("out", "no_plots")  # where get_map.py writes its results, not what it scores
MODEL_OVERRIDES = ("anchors", "scale_x_y")  # YOLO's, for files that do not carry them; get_map.py has no flag


EvalSettings = settings_class(
    "EvalSettings", [s for s in tool_settings("get_map") if s.name not in SCRIPT_ONLY], tool="get_map",
    extra=[(name, Any, field(default=None)) for name in MODEL_OVERRIDES],
    namespace={"__module__": __name__, "__doc__": (
        "What get_map.py's flags set, under the same names and with the same defaults (the schema's, "
        "utils/core/schema_tools.py: `python get_map.py --help`). data: a path, or a utils.data.layouts.Dataset "
        "(open_dataset: its format and image folder then come with it); weights: checkpoint, reference .pth or darknet "
        ".weights (None: the newest ./logs/**/best.pth, else the newest last.pth or interrupted.pth); detections: a "
        "COCO results file scored instead of a model; "
        "classes: a classes file or a list of names; phi / attention, input_size (416, (h, w) or '384,640'), "
        "anchors, scale_x_y: for files that do not carry them (our checkpoints do).")})
SETTING_NAMES = tuple(f.name for f in fields(EvalSettings))


def eval_settings(**settings) -> EvalSettings:
    """EvalSettings from keywords, each checked against the schema (an unknown name is refused naming the nearest,
    a value of the wrong type naming the setting); the thresholds must lie in 0..1."""
    where = "evaluation settings (get_map.py's flags)"
    taken = [k for k in settings if k in SCRIPT_ONLY]
    if taken:
        raise ValueError(f"{where}: {taken[0]} is where get_map.py writes; evaluate returns the result "
                         "(utils.eval.report.save_results writes a results folder)")
    as_given = {k: v for k, v in settings.items()
                if k in MODEL_OVERRIDES or (k == "classes" and not isinstance(v, (str, Path, type(None))))
                or (k == "data" and isinstance(v, Dataset))}
    checked = check_overrides({k: v for k, v in settings.items() if k not in as_given}, where, tool="get_map")
    s = EvalSettings(**checked, **as_given)
    for name in ("conf", "nms", "iou", "score_thr"):
        if not 0 <= getattr(s, name) <= 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(s, name)} is outside 0..1")
    return s


class Scored(NamedTuple):
    """What score returns: the result dict, the detections ([K, 6] per sample: xyxy pixels, score, class),
    the scored samples, the class names and the folder a results folder goes under by default."""

    result: Dict
    detections: List[np.ndarray]
    samples: list
    class_names: List[str]
    base: Path
    dataset: Optional[Dataset] = None  # what the split was read from (utils.data.layouts.open_dataset)


def default_classes_file(dataset: Dataset) -> Path:
    return resolve_classes(dataset, MODEL_DATA / "voc_classes.txt")


def given_classes(s: EvalSettings) -> Optional[List[str]]:
    if s.classes is None:
        return None
    return read_classes(s.classes) if isinstance(s.classes, (str, Path)) else list(s.classes)


def given_size(s: EvalSettings):
    """The input size asked for: None, or (h, w) from 416, (384, 640) or '384,640'."""
    return None if s.input_size is None else parse_input_size(
        s.input_size.split(",") if isinstance(s.input_size, str) else s.input_size)


def build_model(s: EvalSettings, dataset: Dataset):
    """(model, its DetectorSpec, is_our_checkpoint) with the class names checked against `classes`."""
    weights = Path(s.weights)
    ckpt = {} if weights.suffix == ".weights" else read_checkpoint(weights)
    own_names = ckpt.get("class_names")
    given = given_classes(s)
    if own_names and given is not None and list(given) != list(own_names):
        raise UserError(f"--classes {s.classes} ({len(given)}: {', '.join(given[:6])}...) differs from the "
                        f"{len(own_names)} classes {weights} was trained on ({', '.join(own_names[:6])}...); "
                        "leave out --classes to use the checkpoint's")
    names = None if own_names else (given or read_classes(default_classes_file(dataset)))
    attention = s.attention if s.attention is not None else s.phi
    if own_names and attention is not None:
        print(f"note: {weights} records its attention; --phi/--attention ignored")
        attention = None
    model, spec = load_detector(weights, class_names=names, attention=attention, input_size=given_size(s),
                                     anchors=s.anchors, scale_x_y=s.scale_x_y)
    return model, spec, bool(own_names)


def class_hint(class_names, where: str) -> str:
    return (f"none of the {len(class_names)} classes ({', '.join(class_names[:8])}"
            f"{', ...' if len(class_names) > 8 else ''}) is annotated in {where}: the classes do not "
            "match the dataset's; check --classes, --weights and --data")


def scan_failure(error, stats, where: str, class_names) -> str:
    """The message for a split without a usable image: the classes are blamed only when they are the cause."""
    if stats.left_out:
        names = "; ".join(f"{e.image} ({e.reason})" for e in stats.left_out)
        return f"{error}; unreadable: {names}"
    if stats.unknown and not sum(stats.objects.values()):
        return f"{error}; {class_hint(class_names, where)}"
    return str(error)


def load_split(dataset: Dataset, split: str, class_names, skip_unreadable: bool = False, stats=None):
    """(samples, left_out): the split's samples and the utils.data.voc.LeftOut entries of the images that cannot
    be read or hold invalid ground truth (an error unless skip_unreadable); an error when no object of the classes
    is annotated. Objects of other classes are not scored, their images are (as the VOC devkit and pycocotools
    score a subset of classes); the objects are named. `dataset`: a utils.data.layouts.Dataset (open_dataset);
    `stats`: a utils.data.voc.ScanStats to fill."""
    where = f"{dataset} [{split}]"
    stats = stats if stats is not None else ScanStats()
    try:
        samples, left_out = load_eval_samples(dataset, split, class_names, skip_unreadable, stats=stats)
    except UnreadableImagesError as e:
        raise UserError(str(e)) from None
    except DatasetError as e:
        raise UserError(scan_failure(e, stats, where, class_names)) from None
    if samples and not any(len(s.labels) for s in samples):
        raise UserError(class_hint(class_names, where))
    return samples, left_out


def torch_runner(s: EvalSettings, dataset: Dataset):
    """What runs the network for the torch backend: (model, spec, is_our_checkpoint, None: torch runs it). The graph
    backends (--backend onnx or openvino, .onnx files) are utils.deploy.graph_scoring's: it sits above this layer."""
    if str(s.weights).lower().endswith(".onnx") or s.backend not in (None, "torch"):
        raise UserError(f"{s.weights} on backend {s.backend or 'onnx'}: this module scores on torch; score it with "
                        "get_map.py or, from Python, utils.deploy.graph_scoring.evaluate")
    return (*build_model(s, dataset), None)


# (settings, dataset) -> (network, DetectorSpec, is our checkpoint, what ran: None for torch, else the settings a
# graph runtime ran with, {"device", "backend", "amp"}, recorded in the result's settings)
Runner = Callable[[EvalSettings, Dataset], tuple]


def run_model(s: EvalSettings, dataset: Dataset, split: str, stats=None, runner: Runner = torch_runner):
    """Detections from the model: (detections, samples, left_out, class_names, results base folder, settings);
    `stats`: the split's ScanStats to fill; `runner` builds what runs the network."""
    model, spec, ours, ran = runner(s, dataset)
    if spec.input_size[0] % 32 or spec.input_size[1] % 32:
        raise UserError(f"input size {list(spec.input_size)} is not a multiple of 32")
    names = list(spec.class_names)
    samples, left_out = load_split(dataset, split, names, s.skip_unreadable, stats)
    device = select_device(s.device if ran is None else "cpu")  # a graph's session holds its own device
    amp = resolve_amp(s.amp, device) if ran is None else None
    slicing = flag_slicing(s.slice, s.overlap, s.slice_full)
    detections = detect.detect_samples(model.to(device), samples, spec=spec, conf_thres=s.conf, nms_thres=s.nms,
                                       batch_size=s.batch_size, workers=s.workers, device=device, amp=amp,
                                       skip_unreadable=s.skip_unreadable, agnostic_nms=s.agnostic_nms,
                                       slicing=slicing)
    detections, samples, unread = detect.drop_unreadable(detections, samples)
    settings = {"weights": str(s.weights), "input_size": list(spec.input_size), "conf_thres": s.conf,
                "nms_thres": s.nms, "attention": spec.attention, "scale_x_y": spec.scale_x_y,
                "device": str(device), "backend": "torch", "amp": amp_name(amp), "agnostic_nms": s.agnostic_nms,
                "slice": None if slicing is None else {"tile": list(slicing.tile), "overlap": slicing.overlap,
                                                       "full": slicing.full}, **(ran or {})}
    base = Path(s.weights).parent if ours else RESULTS_BASE
    return detections, samples, left_out + unread, names, base, settings


def load_detections(s: EvalSettings, dataset: Dataset, split: str, stats=None):
    names = given_classes(s) or read_classes(default_classes_file(dataset))
    samples, left_out = load_split(dataset, split, names, s.skip_unreadable, stats)
    categories = detect.dataset_categories(dataset, split)  # None unless a COCO JSON
    detections, without = read_coco_file(s.detections, samples, names, categories)  # warns when without > 0
    settings = {"detections": str(s.detections), "images_without_results": without}
    return detections, samples, left_out, names, RESULTS_BASE, settings


def unlisted_summary(stats) -> dict:
    """summary.json's account of the objects of classes outside the class list (not scored) and of the images
    holding only such objects (scored without ground truth)."""
    return {"classes": dict(stats.unknown.most_common()), "other_class_images": stats.scored_empty}


def score_settings(s: EvalSettings, runner: Runner = torch_runner) -> Scored:
    """score for settings already built (eval_settings)."""
    if not s.detections and not s.weights:
        weights, why = default_weights()
        print(f"weights {weights} ({why})")
        s = replace(s, weights=str(weights))
    dataset = open_dataset(s.data, s.data_format, s.images)  # its layout detected here, once
    split = s.split or dataset.default_split("eval")
    source = load_detections if s.detections else partial(run_model, runner=runner)
    stats = ScanStats()
    detections, samples, left_out, names, base, settings = source(s, dataset, split, stats)
    result = ev.evaluate_detections(detections, samples, names, metric=s.metric, iou_thres=s.iou,
                                    score_thr=s.score_thr, coco_backend=s.coco_backend, left_out=left_out)
    result["left_out"].update(unlisted_summary(stats))
    result["settings"].update(settings, data=str(dataset.path), split=split)
    return Scored(result, detections, samples, names, base, dataset)


def score(runner: Runner = torch_runner, **settings) -> Scored:
    """Detect (or read `detections`) and score as get_map.py does; keywords: EvalSettings's fields; `runner`: what
    builds the network (utils.deploy.graph_scoring passes one for every backend)."""
    return score_settings(eval_settings(**settings), runner)


def evaluate(**settings) -> Dict:
    """The result dict get_map.py prints and saves for these settings (keywords: EvalSettings's fields,
    get_map.py's flags: weights, data, split, classes, conf, nms, iou, metric, score_thr, device, amp, ...)."""
    return score(**settings).result
