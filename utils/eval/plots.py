"""PNG plots of evaluation results: PR curve per class, AP per class, confusion matrix, F1 per score threshold."""
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from utils.core.plotting import plt, safe_name, save_figure


def plot_pr_curve(name: str, curve: Dict, ap, score_thr: float, path) -> Path:
    """Precision against recall for one class, the operating point at score_thr marked."""
    fig, ax = plt.subplots(figsize=(5, 4))
    rec, prec, scores = (np.asarray(curve[k]) for k in ("recall", "precision", "scores"))
    if len(rec):
        ax.plot(np.concatenate([[0.0], rec]), np.concatenate([[prec[0]], prec]), color="tab:blue")
        envelope = np.maximum.accumulate(prec[::-1])[::-1]
        ax.fill_between(np.concatenate([[0.0], rec]), np.concatenate([envelope[:1], envelope]), step="pre",
                        alpha=0.15, color="tab:blue", label="interpolated (area = AP)")
        k = int(np.sum(scores >= score_thr))
        if k:
            ax.plot(rec[k - 1], prec[k - 1], "o", color="tab:red", label=f"score >= {score_thr:g}")
        ax.legend(loc="lower left")
    title = f"{name}: AP {ap:.3f}" if ap is not None else f"{name}: no ground truth"
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_pr_curves(per_class: Sequence[Dict], curves: Sequence[Dict], score_thr: float, out_dir) -> List[Path]:
    """One PNG per class, named after the class, under out_dir."""
    return [plot_pr_curve(row["class"], curve, row["ap"], score_thr, Path(out_dir) / f"{i:02d}_{safe_name(row['class'])}.png")
            for i, (row, curve) in enumerate(zip(per_class, curves))]


def plot_ap_bars(per_class: Sequence[Dict], map_value: float, path, key: str = "ap", label: str = "mAP") -> Path:
    """Horizontal bars of AP per class, best at the top; classes without ground truth left out."""
    rows = sorted((r for r in per_class if r[key] is not None), key=lambda r: r[key])
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(rows) + 1)))
    ax.barh([r["class"] for r in rows], [r[key] for r in rows], color="tab:blue")
    for y, r in enumerate(rows):
        ax.text(min(r[key], 1.0) + 0.01, y, f"{r[key]:.3f}", va="center", fontsize=8)
    ax.set(xlim=(0, 1.12), xlabel="AP", title=f"{label} {map_value:.4f}")
    return save_figure(fig, path)


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path, normalize: bool = True) -> Path:
    """Rows true class, columns predicted class, 'background' last; cells normalised by row when asked."""
    cm = np.asarray(cm, dtype=np.float64)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    names = list(class_names) + ["background"]
    size = max(4.0, 0.45 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if len(names) <= 30:
        for (i, j), v in np.ndenumerate(cm):
            if v:
                ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=7,
                        color="white" if shown[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix" + (" (row-normalised)" if normalize else ""))
    return save_figure(fig, path)


def f1_by_threshold(curves: Sequence[Dict],
                    thresholds: Optional[Sequence[float]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(thresholds [T], F1 [C, T]): each class's F1 over its detections scoring >= each threshold.

    `curves` are the evaluator's per-class PR curves (recall, precision, scores by descending score). F1 is
    0 where no detection passes or the class has no hit. Default thresholds: 0, 0.001, ..., 1.
    """
    thresholds = np.linspace(0, 1, 1001) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    f1 = np.zeros((len(curves), len(thresholds)))
    for c, curve in enumerate(curves):
        rec, prec, scores = (np.asarray(curve[k], dtype=np.float64) for k in ("recall", "precision", "scores"))
        passed = np.searchsorted(-scores, -thresholds, side="right")  # how many scores are >= each threshold
        r, p = np.zeros(len(thresholds)), np.zeros(len(thresholds))
        some = passed > 0
        r[some], p[some] = rec[passed[some] - 1], prec[passed[some] - 1]
        f1[c] = np.divide(2 * p * r, p + r, out=np.zeros(len(thresholds)), where=p + r > 0)
    return thresholds, f1


def best_mean_f1(thresholds: np.ndarray, f1: np.ndarray, per_class: Sequence[Dict]) -> Tuple[np.ndarray, float, float]:
    """(mean F1 [T] over the classes with ground truth, its best value, the highest threshold reaching it).

    Of thresholds with the same F1 the highest is the one kept: the same F1 from fewer detections.
    """
    has_gt = np.array([row["gts"] > 0 for row in per_class], dtype=bool)
    mean = f1[has_gt].mean(axis=0) if has_gt.any() else np.zeros(len(thresholds))
    best = int(np.flatnonzero(mean >= mean.max() - 1e-12)[-1])
    return mean, float(mean[best]), float(thresholds[best])


def plot_f1_curve(per_class: Sequence[Dict], curves: Sequence[Dict], path) -> Path:
    """F1 against the score threshold: a thin line per class, the mean over classes with ground truth thick."""
    thresholds, f1 = f1_by_threshold(curves)
    mean, best, at = best_mean_f1(thresholds, f1, per_class)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    named = len(per_class) <= 20  # more names than this make the legend unreadable
    for row, values in zip(per_class, f1):
        ax.plot(thresholds, values, linewidth=0.8, alpha=0.6, label=row["class"] if named else None)
    ax.plot(thresholds, mean, color="black", linewidth=3, label=f"all classes: best F1 {best:.3f} at {at:.3f}")
    ax.plot(at, best, "o", color="tab:red")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="score threshold", ylabel="F1", title="F1 against the score threshold")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
