"""What get_map.py prints and saves for a scoring result (utils.eval.scoring.score): the per-class table, the
headline mAPs, the settings line, and the results folder (summary.json, per_class.csv, detections.json, plots)."""
import csv
import io
from pathlib import Path

import numpy as np

from utils.core.fileio import write_json_atomic, write_text_atomic
from utils.data.voc import INVALID_GROUND_TRUTH
from utils.eval import detect
from utils.eval import plots as map_plots


def unlisted_text(unlisted, images: int) -> str:
    """What is said of the objects of classes outside the class list ({name: count})."""
    names = ", ".join(f"{name} {n}" for name, n in sorted(unlisted.items(), key=lambda kv: (-kv[1], kv[0])))
    return (f"{sum(unlisted.values())} objects of classes outside the class list are not scored ({names}); their "
            f"images are, {images} of them without ground truth")


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
    st = result["settings"]
    if st.get("images_without_results"):  # get_map.py --detections with a file covering part of the split
        lines.insert(0, f"WARNING: {st['images_without_results']} of the {st['images']} images have no row in "
                        f"{st['detections']}: scored as images with no detections")
    if result["coco"] is not None:
        c = {k: "n/a" if v is None else num(v) for k, v in result["coco"].items()}  # None: no such objects
        lines.append(f"COCO mAP@[.5:.95]: {c['map50_95']}  @.5: {c['map50']}  @.75: {c['map75']}  "
                     f"APs {c['map_small']}  APm {c['map_medium']}  APl {c['map_large']}")
    return "\n".join(lines)


def settings_line(result) -> str:
    return "settings: " + ", ".join(f"{k} {v}" for k, v in result["settings"].items() if k != "classes")


def report_text(result) -> str:
    """Everything get_map.py prints of a result: the table, the headline and the settings."""
    return "\n".join((format_table(result), headline(result), settings_line(result)))


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


def save_results(out: Path, scored, plots: bool = True) -> None:
    """The results folder of a utils.eval.scoring.Scored: summary.json, per_class.csv, the plots, and for a model
    run detections.json, in a COCO JSON's own image and category ids so pycocotools can score it too.
    Its COCO categories are those of the Dataset the split was read from (Scored.dataset)."""
    result, detections, samples, names = scored[:4]
    st = result["settings"]
    if "detections" not in st:
        categories = detect.dataset_categories(scored.dataset, st["split"])
        detect.write_coco_results(out / "detections.json", detections, detect.result_image_ids(samples), names,
                                  categories)
    write_outputs(out, result, names, plots=plots)
