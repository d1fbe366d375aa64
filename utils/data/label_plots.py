"""labels.png: what a training split holds, drawn before training (as ultralytics' labels.jpg).

Four panels: objects per class; box centres and box sizes, both divided by the image width and height;
box sizes in network-input pixels (as letterboxing scales them) on log axes with the anchors, which are
in those same pixels, so one look shows whether the anchors cover the boxes.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from utils.core.config import parse_input_size
from utils.core.plotting import plt, save_figure
from utils.data.anchors import box_sizes
from utils.data.annotations import Sample

HIST_BINS = 50
MANY_CLASSES = 20  # above this, class names and counts are written vertically


@dataclass
class LabelStats:
    """The objects of a list of Samples.

    counts: int64 [C] objects per class, difficult ones included; difficult: int64 [C] the difficult ones;
    centres: float64 [N, 2] box centres (cx / width, cy / height); sizes: float64 [N, 2] (w / width, h / height).
    """

    num_images: int
    counts: np.ndarray
    difficult: np.ndarray
    centres: np.ndarray
    sizes: np.ndarray


def label_statistics(samples: Sequence[Sample], num_classes: int) -> LabelStats:
    """Counts per class and the normalised centres and sizes of every box in `samples`."""
    labels = np.concatenate([np.zeros(0, np.int64)] + [np.asarray(s.labels, np.int64) for s in samples])
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"class indices {labels.min()}..{labels.max()} in the samples; expected 0..{num_classes - 1}")
    difficult = np.concatenate([np.zeros(0, bool)] + [np.asarray(s.difficult, bool) for s in samples])
    normalised = [np.asarray(s.boxes, np.float64).reshape(-1, 4) / [s.width, s.height, s.width, s.height]
                  for s in samples]
    boxes = np.concatenate([np.zeros((0, 4))] + normalised)
    return LabelStats(num_images=len(samples),
                      counts=np.bincount(labels, minlength=num_classes),
                      difficult=np.bincount(labels[difficult], minlength=num_classes),
                      centres=(boxes[:, :2] + boxes[:, 2:]) / 2,
                      sizes=boxes[:, 2:] - boxes[:, :2])


def _no_objects(ax, title: str) -> None:
    ax.text(0.5, 0.5, "no objects", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_title(title)


def draw_counts(ax, stats: LabelStats, class_names: Sequence[str]) -> None:
    """Bars of objects per class, difficult ones as the light top part, each bar's count above it."""
    x = np.arange(len(class_names))
    many = len(class_names) > MANY_CLASSES
    ax.bar(x, stats.counts - stats.difficult, color="tab:blue", width=0.8)
    ax.bar(x, stats.difficult, bottom=stats.counts - stats.difficult, color="lightsteelblue", width=0.8)
    top = max(int(stats.counts.max(initial=0)), 1)
    for i, count in enumerate(stats.counts):
        ax.text(i, count + 0.01 * top, str(int(count)), ha="center", va="bottom", fontsize=7,
                rotation=90 if many else 0)
    ax.set_xticks(x, class_names, rotation=90 if many or max(map(len, class_names), default=0) > 8 else 0,
                  fontsize=8)
    ax.set(xlim=(-0.6, len(class_names) - 0.4), ylim=(0, top * (1.15 if many else 1.08)), ylabel="objects")
    total, hard = int(stats.counts.sum()), int(stats.difficult.sum())
    ax.set_title(f"{total} objects ({hard} difficult, the light part of each bar) in {stats.num_images} images, "
                 f"{len(class_names)} classes")


def draw_unit_histogram(ax, xy: np.ndarray, title: str, labels, image_frame: bool) -> None:
    """2-D histogram of points in [0, 1]^2 with a log colour scale; y runs down when `image_frame`."""
    if len(xy):
        ax.hist2d(xy[:, 0], xy[:, 1], bins=HIST_BINS, range=[[0, 1], [0, 1]], cmap="Blues", cmin=1, norm="log")
        ax.set_title(title)
    else:
        _no_objects(ax, title)
    ax.set(xlim=(0, 1), ylim=(1, 0) if image_frame else (0, 1), xlabel=labels[0], ylabel=labels[1], aspect="equal")


def draw_input_sizes(ax, wh: np.ndarray, input_size, anchors: Optional[np.ndarray]) -> None:
    """Box width against height in input pixels (input an int or (h, w)) on log axes, the anchors marked."""
    h, w = parse_input_size(input_size)
    title = f"box size in {w}x{h} input pixels"
    shown = np.concatenate([wh, anchors if anchors is not None else np.zeros((0, 2))])
    low, high = min(1.0, float(shown.min(initial=1.0))), max(float(max(h, w)), float(shown.max(initial=1.0)))
    if len(wh):
        bins = np.geomspace(low, high, HIST_BINS)
        ax.hist2d(wh[:, 0], wh[:, 1], bins=[bins, bins], cmap="Blues", cmin=1, norm="log")
        ax.set_title(title)
    else:
        _no_objects(ax, title)
    if anchors is not None and len(anchors):
        ax.plot(anchors[:, 0], anchors[:, 1], "x", color="tab:red", markersize=8, mew=2, label="anchors")
        ax.legend(loc="lower right")
    ax.set(xscale="log", yscale="log", xlim=(low * 0.9, high * 1.1), ylim=(low * 0.9, high * 1.1),
           xlabel="width (px)", ylabel="height (px)", aspect="equal")


def label_figure(samples: Sequence[Sample], class_names: Sequence[str], input_size,
                 anchors: Optional[np.ndarray] = None):
    """The labels.png figure: counts across the top, centres, normalised sizes and input-pixel sizes below."""
    stats = label_statistics(samples, len(class_names))
    fig = plt.figure(figsize=(max(13.0, 0.22 * len(class_names) + 2), 9))
    grid = fig.add_gridspec(2, 3, height_ratios=[1, 1.15], hspace=0.45 if len(class_names) > MANY_CLASSES else 0.3)
    draw_counts(fig.add_subplot(grid[0, :]), stats, class_names)
    draw_unit_histogram(fig.add_subplot(grid[1, 0]), stats.centres, "box centres (fraction of the image)",
                        ("x", "y"), image_frame=True)
    draw_unit_histogram(fig.add_subplot(grid[1, 1]), stats.sizes, "box sizes (fraction of the image)",
                        ("width", "height"), image_frame=False)
    anchors = None if anchors is None else np.asarray(anchors, np.float64).reshape(-1, 2)
    draw_input_sizes(fig.add_subplot(grid[1, 2]), box_sizes(samples, input_size), input_size, anchors)
    return fig


def plot_labels(samples: Sequence[Sample], class_names: Sequence[str], path, input_size,
                anchors: Optional[np.ndarray] = None) -> Path:
    """Write labels.png (see label_figure) to `path`, atomically."""
    return save_figure(label_figure(samples, class_names, input_size, anchors), path)
