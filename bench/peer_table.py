"""The table of bench/bench_vs_peer.py: one row per (dataset, model), and a line of notes on how each was run."""
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Sequence

from utils.core.fileio import write_json_atomic, write_text_atomic
from utils.eval.evaluator import CONF_THRES, NMS_THRES

MAX_DET = 300


def format_table(rows: Sequence[Dict]) -> str:
    """A markdown table: dataset, model, AP50, AP50-95, train wall time, params."""
    lines = ["| dataset | model | AP50 | AP50-95 | train wall time | params |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        params = f"{r['params'] / 1e6:.2f} M" if r.get("params") else "-"
        lines.append(f"| {r['dataset']} | {r['model']} | {r['map50']:.3f} | {r['map50_95']:.3f} | "
                     f"{r['train_wall_s'] / 60:.1f} min | {params} |")
    return "\n".join(lines)


def table_notes(settings, rows: Sequence[Dict]) -> str:
    """One line: the shared settings and scoring, then the peers' yamls, version and any network access tried."""
    text = (f"{settings.input_size} px, {settings.epochs} epochs, batch {settings.batch_size}, "
            f"{settings.workers} workers asked, {settings.threads} threads"
            + (f", first {settings.max_images} train/val images" if settings.max_images else "")
            + f"; scored by utils.eval.evaluator at conf {CONF_THRES}, NMS IoU {NMS_THRES}, max {MAX_DET} boxes")
    peers = [r for r in rows if "ultralytics" in r]
    return text + ours_notes([r for r in rows if r not in peers]) + (peer_notes(peers) if peers else "")


def ours_notes(ours: Sequence[Dict]) -> str:
    """'; <variant>: train.py <flags>' for each variant of ours run with flags of its own (bench --ours), and
    each variant's train wall time against the dataset's first variant's."""
    text = "".join(f"; {name}: train.py {flags}" for name, flags in dict.fromkeys(
        (r["model"], r["ours_flags"]) for r in ours if r.get("ours_flags")))
    first: Dict[str, Dict] = {}
    ratios = []
    for r in ours:
        base = first.setdefault(r["dataset"], r)
        if base is not r:
            ratios.append(f"{r['dataset']} {r['model']} {r['train_wall_s'] / base['train_wall_s']:.2f}x {base['model']}")
    return text + (f"; train wall time: {', '.join(ratios)}" if ratios else "")


def peer_notes(peers: Sequence[Dict]) -> str:
    """'; peers: <yamls> (...)', the head each NMS-free model was scored from, network attempts, their own AP50."""
    yamls = dict.fromkeys(Path(r.get("model_yaml", f"{r['model']}.yaml")).name for r in peers)
    versions = sorted({r["ultralytics"] for r in peers if r.get("ultralytics")})
    text = f"; peers: {', '.join(yamls)} (random weights, ultralytics {', '.join(versions)}, 0 workers on CPU)"
    for model, used in dict.fromkeys((r["model"], r["detect_settings"].get("used_nms_free_head")) for r in peers
                                     if r.get("detect_settings", {}).get("nms_free_head")):
        text += (f"; {model} scored from its NMS-free end-to-end head (top {MAX_DET} by score, no NMS)" if used else
                 f"; {model} scored from its one-to-many head with the NMS above (its NMS-free head unused)")
    attempts = [f"{r['dataset']} {r['model']}: {a}" for r in peers
                for a in r.get("train_network_attempts", []) + r.get("predict_network_attempts", [])]
    text += f"; network attempts refused: {attempts}" if attempts else "; no network access attempted"
    own = [f"{r['dataset']} {r['model']} {r['own_map50']:.3f}" for r in peers if r.get("own_map50") is not None]
    return text + (f"; the peers' own val AP50 of last.pt (their NMS IoU 0.7): {', '.join(own)}" if own else "")


def write_outputs(rows: List[Dict], settings, out: Path) -> str:
    """Write <out>/bench_vs_peer.md and .json atomically; returns the markdown."""
    text = format_table(rows) + "\n\n" + table_notes(settings, rows) + "\n"
    write_text_atomic(out / "bench_vs_peer.md", text)
    write_json_atomic(out / "bench_vs_peer.json", {"settings": asdict(settings), "rows": rows})
    return text
