"""Score a detector on a dataset split: VOC AP per class (devkit rules) and COCO mAP, with plots.

  python get_map.py                                  # the newest ./logs/**/best.pth on the default eval split
  python get_map.py --weights logs/exp/best.pth --metric voc07
  python get_map.py --detections results.json        # score a saved COCO results file, no model

Images of the split that cannot be read, or whose ground truth is invalid (a box of `70px`, NaN, xmin > xmax),
stop the evaluation (exit code 1) with their names; with --skip-unreadable they are left out, and the table,
the summary and summary.json say how many images and ground-truth objects that was. Objects of classes outside
the class list are not scored, their images are (as the VOC devkit and pycocotools do); the table and
summary.json (left_out.classes) name them.

Training reports its mAP with the same evaluator and defaults (utils/eval/evaluator.py), so both agree.
Exit codes (utils/core/cli.py): 0 done, 1 bad input, 130 interrupted.
"""
import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np

from nets.attention import PHI_NAMES
from utils.core.amp import AMP_CHOICES, amp_name, resolve_amp, select_device
from utils.core.cli import UserError, choices_help, run_main
from utils.core.config import read_classes
from utils.core.fileio import write_json_atomic, write_text_atomic
from utils.core.paths import newest_best
from utils.data.layouts import add_data_flags, data_options
from utils.data.voc import (INVALID_GROUND_TRUTH, DatasetError, ScanStats, UnreadableImagesError, default_split,
                            load_eval_samples, resolve_classes, resolve_data)
from utils.engine.checkpoint import model_from_weights, read_checkpoint
from utils.engine.run_logger import new_run_dir
from utils.eval import detect
from utils.eval import evaluator as ev
from utils.eval import plots as map_plots

ROOT = Path(__file__).resolve().parent


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--weights", default=None, help="checkpoint (.pth from train.py or the reference repo) or darknet .weights "
      "(default: the newest best.pth under logs/ of the working directory)")
    a("--data", default="VOCdevkit", help="dataset: VOCdevkit root, VOC year folder, annotation-lines file, YOLO "
      "data YAML or folder, COCO JSON or root, labelme folder (default: VOCdevkit, or the demo dataset when it is empty)")
    add_data_flags(p)
    a("--split", default=None, help="split to score (default: the evaluation split, e.g. VOC2007/test or the demo's val)")
    a("--classes", default=None, help="classes file (default: the checkpoint's class names; for other weights "
      "and --detections: model_data/voc_classes.txt, or the demo's classes on the demo dataset)")
    a("--phi", type=int, default=None, help="attention of a reference .pth / darknet file: "
      f"{choices_help(PHI_NAMES)}")
    a("--attention", default=None, help="attention spec of a reference .pth (overrides --phi); checkpoints know theirs")
    a("--input-size", type=int, default=None, help="square input size, multiple of 32 (default: the checkpoint's, else 416)")
    a("--conf", type=float, default=ev.CONF_THRES, help=f"score threshold before NMS (default {ev.CONF_THRES})")
    a("--nms", type=float, default=ev.NMS_THRES, help=f"NMS IoU threshold (default {ev.NMS_THRES})")
    a("--iou", type=float, default=ev.IOU_THRES, help=f"IoU a detection must exceed to match for VOC AP (default {ev.IOU_THRES})")
    a("--metric", default="all", choices=ev.METRICS, help="voc: all-point AP (VOC2010+); voc07: 11-point AP; "
      "coco: adds COCO mAP@[.5:.95] and the size breakdown; all: every one (default all)")
    a("--coco-backend", default="fast", choices=ev.COCO_BACKENDS, help="fast: vectorised, the same numbers as "
      "pycocotools (tested); pycocotools: run COCOeval itself (default fast)")
    a("--score-thr", type=float, default=ev.SCORE_THRES, help="score for precision/recall/F1 and the confusion "
      f"matrix (default {ev.SCORE_THRES})")
    a("--out", default=None, help="results folder (default: a new map* folder in the weights' run folder, or under map_out/)")
    a("--detections", default=None, help="score this COCO results file (image_id, category_id, bbox [x,y,w,h], "
      "score) instead of running a model; for a COCO JSON, image_id and category_id are its ids, as pycocotools "
      "reads them; for other datasets, category_id is the class index + 1 (category_name may name it)")
    a("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    a("--workers", type=int, default=0, help="DataLoader processes reading images (default 0: in the main process)")
    a("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ... (default auto)")
    a("--amp", default="auto", choices=AMP_CHOICES, help="autocast dtype for the network; "
      "decoding and NMS stay fp32 (auto: bf16 on CPUs with native support, as training evaluates)")
    a("--no-plots", action="store_true", help="skip the PNG plots")
    a("--skip-unreadable", action="store_true", help="score without the images (and their ground truths) that "
      "cannot be read or hold invalid ground truth, and say how many were left out; by default such images stop "
      "the evaluation")
    return p


def default_classes_file(data_path: Path, options) -> Path:
    return resolve_classes(data_path, ROOT / "model_data" / "voc_classes.txt", **options)


def build_model(args, data_path: Path):
    """(model, meta, is_our_checkpoint) with the class names checked against --classes."""
    weights = Path(args.weights)
    ckpt = {} if weights.suffix == ".weights" else read_checkpoint(weights)
    own_names = ckpt.get("class_names")
    given = read_classes(args.classes) if args.classes else None
    if own_names and given is not None and list(given) != list(own_names):
        raise UserError(f"--classes {args.classes} ({len(given)}: {', '.join(given[:6])}...) differs from the "
                        f"{len(own_names)} classes {weights} was trained on ({', '.join(own_names[:6])}...); "
                        "leave out --classes to use the checkpoint's")
    names = None if own_names else (given or read_classes(default_classes_file(data_path, data_options(args))))
    attention = args.attention if args.attention is not None else args.phi
    if own_names and attention is not None:
        print(f"note: {weights} records its attention; --phi/--attention ignored")
        attention = None
    size = [args.input_size] * 2 if args.input_size else None
    model, meta = model_from_weights(weights, class_names=names, attention=attention, input_size=size)
    return model, meta, bool(own_names)


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


def load_split(data_path: Path, split: str, class_names, skip_unreadable: bool = False, options=None,
               stats=None):
    """(samples, left_out): the split's samples and the utils.data.voc.LeftOut entries of the images that cannot
    be read or hold invalid ground truth (an error unless skip_unreadable); an error when no object of the classes
    is annotated. Objects of other classes are not scored, their images are (as the VOC devkit and pycocotools
    score a subset of classes); the objects are named. `options`: the data_format and images_dir keywords
    (utils.data.layouts.data_options); `stats`: a utils.data.voc.ScanStats to fill."""
    where = f"{data_path} [{split}]"
    stats = stats if stats is not None else ScanStats()
    try:
        samples, left_out = load_eval_samples(data_path, split, class_names, skip_unreadable, stats=stats,
                                              **(options or {}))
    except UnreadableImagesError as e:
        raise UserError(str(e)) from None
    except DatasetError as e:
        raise UserError(scan_failure(e, stats, where, class_names)) from None
    if samples and not any(len(s.labels) for s in samples):
        raise UserError(class_hint(class_names, where))
    return samples, left_out


def unlisted_text(unlisted, images: int) -> str:
    """What is said of the objects of classes outside the class list ({name: count})."""
    names = ", ".join(f"{name} {n}" for name, n in sorted(unlisted.items(), key=lambda kv: (-kv[1], kv[0])))
    return (f"{sum(unlisted.values())} objects of classes outside the class list are not scored ({names}); their "
            f"images are, {images} of them without ground truth")


def output_dir(args, base: Path) -> Path:
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        return out
    return new_run_dir(str(base), "map")


def num(value, width: int = 0) -> str:
    return f"{value:>{width}.4f}" if value is not None else f"{'-':>{width}}"


def format_table(result) -> str:
    coco = result["coco"] is not None
    lines = [f"{'class':<16}{'AP':>8}{'AP07':>8}" + (f"{'AP50:95':>9}" if coco else "")
             + f"{'GTs':>7}{'dets':>8}{'P':>7}{'R':>7}{'F1':>7}"]
    for r in result["per_class"]:
        lines.append(f"{r['class'][:15]:<16}{num(r['ap'], 8)}{num(r['ap07'], 8)}" + (num(r["ap50_95"], 9) if coco else "")
                     + f"{r['gts']:>7}{r['dets']:>8}{r['precision']:>7.3f}{r['recall']:>7.3f}{r['f1']:>7.3f}")
    thr = result["settings"]["score_thr"]
    lines.append(f"(AP over classes with ground truth; P, R, F1 at score >= {thr:g}; GTs exclude difficult boxes)")
    if result["left_out"]["images"]:
        lines.append(f"({left_out_text(result)}: GTs count only the scored images)")
    if result["left_out"].get("classes"):
        lines.append(f"({unlisted_text(result['left_out']['classes'], result['left_out']['other_class_images'])})")
    return "\n".join(lines)


def unlisted_summary(stats) -> dict:
    """summary.json's account of the objects of classes outside the class list (not scored) and of the images
    holding only such objects (scored without ground truth)."""
    return {"classes": dict(stats.unknown.most_common()), "other_class_images": stats.scored_empty}


def left_out_text(result) -> str:
    lost = result["left_out"]
    invalid = any(f["reason"].startswith(INVALID_GROUND_TRUTH) for f in lost.get("files", []))
    what = "images (unreadable or with invalid ground truth)" if invalid else "unreadable images"
    return (f"{lost['images']} {what} with {lost['objects']} ground-truth objects left out "
            f"(--skip-unreadable); {result['settings']['images']} images scored")


def headline(result) -> str:
    iou = result["settings"]["iou_thres"]
    lines = [f"mAP@{iou:g} VOC all-point: {result['map_voc']:.4f}", f"mAP@{iou:g} VOC07 11-point: {result['map_voc07']:.4f}"]
    if result["left_out"]["images"]:
        lines.insert(0, f"WARNING: {left_out_text(result)}")
    if result["coco"] is not None:
        c = {k: "n/a" if v is None else num(v) for k, v in result["coco"].items()}  # None: no such objects
        lines.append(f"COCO mAP@[.5:.95]: {c['map50_95']}  @.5: {c['map50']}  @.75: {c['map75']}  "
                     f"APs {c['map_small']}  APm {c['map_medium']}  APl {c['map_large']}")
    return "\n".join(lines)


def write_outputs(out: Path, result, class_names, plots: bool) -> None:
    summary = {k: v for k, v in result.items() if k not in ("curves", "detections", "confusion_matrix")}
    summary["confusion_matrix"] = {"rows_true_cols_predicted": list(class_names) + ["background"],
                                   "counts": np.asarray(result["confusion_matrix"]).tolist()}
    write_json_atomic(out / "summary.json", summary)
    buf = io.StringIO()
    keys = ["class", "ap", "ap07", "ap50_95", "gts", "difficult", "dets", "tp", "fp", "precision", "recall", "f1"]
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(result["per_class"])
    write_text_atomic(out / "per_class.csv", buf.getvalue())
    if plots:
        thr = result["settings"]["score_thr"]
        map_plots.plot_pr_curves(result["per_class"], result["curves"], thr, out / "pr_curves")
        st = result["settings"]
        label = f"mAP@{st['iou_thres']:g} ({'VOC07 11-point' if st['metric'] == 'voc07' else 'VOC all-point'})"
        key = "ap07" if st["metric"] == "voc07" else "ap"
        map_plots.plot_ap_bars(result["per_class"], result["map"], out / "ap_per_class.png", key=key, label=label)
        map_plots.plot_confusion_matrix(result["confusion_matrix"], class_names, out / "confusion_matrix.png")
        map_plots.plot_f1_curve(result["per_class"], result["curves"], out / "f1_curve.png")


def run_model(args, data_path: Path, split: str, stats=None):
    """Detections from the model: (detections, samples, left_out, class_names, results base folder, settings);
    `stats`: the split's ScanStats to fill."""
    model, meta, ours = build_model(args, data_path)
    if meta["input_size"][0] % 32 or meta["input_size"][1] % 32:
        raise UserError(f"input size {meta['input_size']} is not a multiple of 32")
    names = meta["class_names"]
    samples, left_out = load_split(data_path, split, names, args.skip_unreadable, data_options(args), stats)
    device = select_device(args.device)
    amp = resolve_amp(args.amp, device)
    detections = detect.detect_samples(model.to(device), samples, meta["input_size"], meta["anchors"],
                                       meta["anchors_mask"], conf_thres=args.conf, nms_thres=args.nms,
                                       scale_x_y=meta["scale_x_y"], batch_size=args.batch_size, workers=args.workers,
                                       device=device, amp=amp, skip_unreadable=args.skip_unreadable)
    detections, samples, unread = detect.drop_unreadable(detections, samples)
    settings = {"weights": str(args.weights), "input_size": meta["input_size"], "conf_thres": args.conf,
                "nms_thres": args.nms, "attention": meta["attention"], "scale_x_y": meta["scale_x_y"],
                "device": str(device), "amp": amp_name(amp)}
    base = Path(args.weights).parent if ours else ROOT / "map_out"
    return detections, samples, left_out + unread, names, base, settings


def load_detections(args, data_path: Path, split: str, stats=None):
    names = read_classes(args.classes or default_classes_file(data_path, data_options(args)))
    samples, left_out = load_split(data_path, split, names, args.skip_unreadable, data_options(args), stats)
    categories = detect.dataset_categories(data_path, split, **data_options(args))  # None unless a COCO JSON
    detections = detect.read_coco_results(args.detections, samples, names, categories)
    return detections, samples, left_out, names, ROOT / "map_out", {"detections": str(args.detections)}


def score(args):
    """Detect (or read --detections) and score as get_map.py does: (result, detections, samples, class_names,
    results base folder). ablate.py scores its runs with this, so both use the same settings."""
    for flag in ("conf", "nms", "iou", "score_thr"):
        if not 0 <= getattr(args, flag) <= 1:
            raise UserError(f"--{flag.replace('_', '-')} {getattr(args, flag)} is outside 0..1")
    if not args.detections and not args.weights:
        args = argparse.Namespace(**{**vars(args), "weights": str(newest_best())})
    data_path = resolve_data(args.data, **data_options(args))
    split = args.split or default_split(data_path, "eval", **data_options(args))
    source = load_detections if args.detections else run_model
    stats = ScanStats()
    detections, samples, left_out, names, base, settings = source(args, data_path, split, stats)
    result = ev.evaluate_detections(detections, samples, names, metric=args.metric, iou_thres=args.iou,
                                    score_thr=args.score_thr, coco_backend=args.coco_backend, left_out=left_out)
    result["left_out"].update(unlisted_summary(stats))
    result["settings"].update(settings, data=str(data_path), split=split)
    return result, detections, samples, names, base


def run(args) -> None:
    """Score, write the results folder and print the table, the headline and the settings."""
    result, detections, samples, names, base = score(args)
    out = output_dir(args, base)
    if not args.detections:  # in a COCO JSON's own image and category ids, so pycocotools can score it too
        st = result["settings"]
        categories = detect.dataset_categories(st["data"], st["split"], **data_options(args))
        detect.write_coco_results(out / "detections.json", detections, detect.result_image_ids(samples), names,
                                  categories)
    write_outputs(out, result, names, plots=not args.no_plots)
    print(format_table(result))
    print(headline(result))
    print("settings: " + ", ".join(f"{k} {v}" for k, v in result["settings"].items() if k != "classes"))
    print(f"results in {out}")


def main(argv=None) -> int:
    """get_map.py with `argv` (default: the command line); returns the exit code (utils/core/cli.py)."""
    return run_main("get_map.py", lambda: run(make_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
