"""ablate.py: variants, budget checks, resume decisions, and a tiny end-to-end ablation run twice (skips)."""
import csv
import json
import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import ablate
from nets.yolo import YoloBody
from tests.conftest import ANCHORS_MASK
from tests.helpers.voc import write_tiny_voc
from utils.eval import ablation_runs as runs
from utils.eval import ablation_table as table
from utils.eval.ablation_runs import AblationPlan
from utils.eval import detect
from utils.eval.stats import Interval


pytestmark = pytest.mark.usefixtures("scan_cache")


def plan_of(args):
    """The library's settings of an ablation (utils/eval/ablation_runs.py) from ablate.py's parsed flags."""
    return AblationPlan(**vars(args))


def test_variants_parse_phi_names_and_site_specs():
    variants = ablate.parse_variants(["0,3", "cbam_eca", "feat1=cbam,feat2=se"])
    assert [v.label for v in variants] == ["phi0", "phi3", "cbam_eca", "feat1=cbam,feat2=se"]
    assert [v.attention for v in variants] == ["none", "eca", "cbam_eca", "feat1=cbam,feat2=se"]
    assert variants[3].slug == "feat1-cbam-feat2-se"


@pytest.mark.parametrize("items, message", [(["0", "bogus"], "valid names"), (["eca", "ECA"], "listed twice"),
                                            (["9"], "valid phi")])
def test_bad_variants_are_rejected_with_the_valid_choices(items, message):
    with pytest.raises(ValueError, match=message):
        ablate.parse_variants(items)


def test_train_args_may_not_override_per_run_flags():
    args = ablate.make_parser().parse_args(["--epochs", "2", "--train-args=--seed=3 --lr 0.02"])
    with pytest.raises(ValueError, match="--seed"):
        runs.budget_flags(plan_of(args))
    args = ablate.make_parser().parse_args(["--epochs", "2", "--train-args=--lr 0.02"])
    assert runs.budget_flags(plan_of(args)) == ["--data", "VOCdevkit", "--epochs", "2", "--lr", "0.02"]


def test_unknown_train_flags_are_caught_before_training():
    args = ablate.make_parser().parse_args(["--train-args=--lr 0.02 --no-such-flag 3"])
    with pytest.raises(ValueError, match="--no-such-flag"):
        runs.budget_flags(plan_of(args))


def test_a_changed_budget_is_refused_once_a_run_made_something(tmp_path):
    runs.check_budget(tmp_path, {"train_flags": ["--epochs", "2"]})
    runs.check_budget(tmp_path, {"train_flags": ["--epochs", "3"]})  # nothing trained yet: a new budget is fine
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "phi0_s0.json").write_text("{}")
    runs.check_budget(tmp_path, {"train_flags": ["--epochs", "3"]})  # same budget: fine
    with pytest.raises(ValueError, match="another budget"):
        runs.check_budget(tmp_path, {"train_flags": ["--epochs", "2"]})


def test_summary_reports_mean_and_sample_std_over_seeds():
    variants = ablate.parse_variants(["0"])
    records = [{"variant": "phi0", "seed": s, "map50": m, "map50_95": m / 2} for s, m in ((1, 0.4), (0, 0.2))]
    bench = {"phi0": {"params": 10, "gflops": 1.0, "latency_ms": 2.0}}
    (row,) = table.summarise(variants, records, bench)
    assert row["seeds"] == "0 1"
    assert row["map50"] == pytest.approx(0.3) and row["map50_std"] == pytest.approx(math.sqrt(0.02))
    assert row["map50_95_std"] == pytest.approx(math.sqrt(0.005))
    (single,) = table.summarise(variants, records[:1], bench)
    assert single["map50"] == pytest.approx(0.4) and single["map50_std"] is None


def test_config_differences_name_the_settings_that_differ():
    records = [{"train_config": {"epochs": 1, "lr": 0.01}}, {"train_config": {"epochs": 2, "lr": 0.01}}]
    assert table.config_differences(records) == ["epochs"]
    assert table.config_differences(records[:1]) == []
    older = {"train_config": {"epochs": 1, "lr": 0.01}}  # from before --se-loss existed
    assert table.config_differences([older, {"train_config": {"epochs": 1, "lr": 0.01, "se_loss": 0.0}}]) == []
    assert table.config_differences([older, {"train_config": {"epochs": 1, "lr": 0.02, "se_loss": 0.0}}]) == ["lr"]


def test_interrupted_run_resumes_from_last_pth_or_restarts_without_one(tmp_path):
    args = ablate.make_parser().parse_args(["--out", str(tmp_path), "--workers", "0"])
    (variant,) = ablate.parse_variants(["eca"])
    stale = tmp_path / "runs" / "eca_s1"
    stale.mkdir(parents=True)
    (stale / "results.csv").write_text("epoch\n")
    fresh = runs.train_command(plan_of(args), variant, 1, ["--epochs", "1"])
    assert not stale.exists()
    assert fresh[fresh.index("--attention") + 1] == "eca" and fresh[fresh.index("--seed") + 1] == "1"
    assert fresh[fresh.index("--name") + 1] == "eca_s1" and "--resume" not in fresh
    stale.mkdir(parents=True)
    (stale / "last.pth").write_bytes(b"")
    resumed = runs.train_command(plan_of(args), variant, 1, ["--epochs", "1"])
    assert resumed[resumed.index("--resume") + 1] == str((stale / "last.pth").resolve())
    assert "--attention" not in resumed and "--epochs" not in resumed  # the run keeps its own settings


def test_run_logged_keeps_the_output_and_the_exit_code(tmp_path, capsys):
    log = tmp_path / "logs" / "x.log"
    cmd = [sys.executable, "-c", "print('hello'); raise SystemExit(3)"]
    assert runs.run_logged(cmd, log, echo=True) == 3
    assert "hello" in log.read_text() and "  | hello" in capsys.readouterr().out
    assert runs.run_logged(cmd, log, echo=False) == 3
    assert log.read_text().splitlines().count("hello") == 2 and capsys.readouterr().out == ""


def test_the_notes_name_the_demo_when_voc_is_absent(tmp_path, monkeypatch):
    from utils.data.demo_data import MARKER

    demo = tmp_path / "demo_data" / "demo"
    demo.mkdir(parents=True)
    (demo / MARKER).write_text(json.dumps({"style": "demo"}))
    other = tmp_path / "elsewhere" / "VOCdevkit"
    other.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert runs.dataset_named(demo) == str(demo.resolve()) + " (the embedded demo dataset)"
    monkeypatch.chdir(tmp_path)
    assert runs.dataset_named(demo) == "demo_data/demo (the embedded demo dataset)"
    assert runs.dataset_named(other) == "elsewhere/VOCdevkit"


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_tiny_ablation_writes_one_row_per_variant_and_skips_finished_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # train.py subprocesses: tiny tensors gain nothing from threads
    voc = write_tiny_voc(tmp_path / "VOCtiny", 4)
    out = tmp_path / "ablation"
    argv = ["--variants", "0,3", "--out", out, "--data", voc, "--classes", voc / "classes.txt", "--epochs", "1",
            "--input-size", "64", "--batch-size", "2", "--eval-period", "0", "--workers", "0", "--device", "cpu",
            "--bench-size", "64", "--latency-runs", "2", "--latency-warmup", "1", "--threads", "1", "--quiet",
            "--bootstrap", "20", "--train-args=--mosaic 0 --amp off"]
    threads_before = torch.get_num_threads()
    assert ablate.main(argv) == 0, capsys.readouterr().err

    rows = read_rows(out / "ablation.csv")
    assert [(r["variant"], r["attention"], r["seeds"]) for r in rows] == [("phi0", "none", "0"), ("phi3", "eca", "0")]
    for r in rows:
        values = [float(r[k]) for k in ("map50", "map50_95", "params", "gflops", "latency_ms")]
        assert all(math.isfinite(v) for v in values) and 0 <= values[0] <= 1 and values[2] > 0 and values[4] > 0
    assert int(rows[1]["params"]) > int(rows[0]["params"])  # ECA adds weights
    table = (out / "ablation.md").read_text()
    assert table.count("| phi0 | none |") == 1 and table.count("| phi3 | eca |") == 1
    assert "one seed per variant" in table and "--epochs 1" in table and "(1 thread)" in table
    assert "| phi3 | n/a (one seed) | n/a (one seed) |" in table and "Δ mAP@0.5 (bootstrap, seed 0)" in table
    assert "20 resamples of the 4 validation images" in table
    assert f"on {voc.resolve()}, split val (4 images)" in table and "embedded demo" not in table
    assert [r["class"] for r in read_rows(out / "ablation_per_class.csv")] == ["red", "blue"]
    assert (out / "ablation_per_class.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "runs" / "phi0_s0" / runs.DETECTIONS_FILE).is_file()
    assert torch.get_num_threads() == threads_before  # --threads only while timing
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "done" / "phi3_s0.json").read_text())["epochs"] == 1

    # Second invocation: both runs are finished, so nothing is trained or scored again; the table is rewritten.
    weights = out / "runs" / "phi0_s0" / "last.pth"
    mtime = weights.stat().st_mtime_ns
    (out / "ablation.csv").unlink()
    capsys.readouterr()
    image = sorted((voc / "JPEGImages").iterdir())[0]
    assert ablate.main([*argv, "--cam-images", image]) == 0
    cam = out / f"cam_{image.stem}.jpg"
    assert cam.read_bytes()[:2] == b"\xff\xd8" and f"wrote {cam}" in capsys.readouterr().out
    assert ablate.main([*argv, "--cam-images", tmp_path / "nope.jpg"]) == 1  # refused before anything runs
    assert "nope.jpg" in capsys.readouterr().err
    assert ablate.main(argv) == 0
    printed = capsys.readouterr().out
    assert "phi0_s0: done before, skipped" in printed and "phi3_s0: done before, skipped" in printed
    assert "training attention" not in printed and "resuming" not in printed and "re-scoring" not in printed
    assert weights.stat().st_mtime_ns == mtime
    assert [r["variant"] for r in read_rows(out / "ablation.csv")] == ["phi0", "phi3"]
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["phi0_s0", "phi3_s0"]

    # A different budget in the same folder is refused before anything runs.
    assert ablate.main([*argv[:-1], "--train-args=--mosaic 0.5 --amp off"]) == 1
    assert "another budget" in capsys.readouterr().err


def test_runs_are_scored_by_get_map_with_its_defaults(tmp_path, monkeypatch):
    """ablate.py's score of a run is `python get_map.py --weights last.pth`'s: same function, same settings."""
    import get_map
    import utils.eval.detect
    from tests.helpers.models import save_random_checkpoint
    from tests.helpers.voc import MAP_CLASSES as CLASSES, write_map_voc
    monkeypatch.setattr("utils.core.amp.cpu_supports_bf16", lambda *args: True)  # --amp auto is bf16 on such CPUs
    voc = write_map_voc(tmp_path)
    weights = tmp_path / "run" / "last.pth"
    save_random_checkpoint(weights, CLASSES)
    calls, detect = [], utils.eval.detect.detect_samples

    def spy(*args, **kwargs):
        calls.append({k: kwargs.get(k) for k in ("amp", "conf_thres", "nms_thres", "batch_size", "scale_x_y")})
        return detect(*args, **kwargs)

    monkeypatch.setattr(utils.eval.detect, "detect_samples", spy)
    record = runs.RunScorer(str(voc), None, "cpu", workers=0)(weights)
    assert get_map.main(["--weights", str(weights), "--data", str(voc), "--device", "cpu", "--out", str(tmp_path / "m"),
                        "--no-plots"]) == 0
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert len(calls) == 2 and calls[0] == calls[1]
    assert calls[0]["amp"] == torch.bfloat16 and calls[0]["conf_thres"] == 0.001 and calls[0]["batch_size"] == 8
    assert (record["map50"], record["map50_95"]) == (summary["map50"], summary["map50_95"])
    assert (record["eval_split"], record["eval_images"]) == (summary["settings"]["split"], 3)
    assert record["eval_amp"] == "bf16"


CLASS_NAMES = ["a", "b", "c"]
BENCH = {"params": 10, "gflops": 1.0, "latency_ms": 2.0}


def fake_record(variant, seed, map50, map50_95, per_class=(0.5, 0.5, None), sizes=(None, 0.4, 0.6)):
    """A done record as ablate.py writes it, with the scores given."""
    return {"variant": variant, "seed": seed, "map50": map50, "map50_95": map50_95,
            **dict(zip(table.SIZE_KEYS, sizes)), "class_names": CLASS_NAMES,
            "per_class_ap50": dict(zip(CLASS_NAMES, per_class))}


def compared_rows(items, records, bootstrap=None, seeds=None, baseline="phi0"):
    variants = ablate.parse_variants(items)
    rows = table.summarise(variants, records, {v.label: BENCH for v in variants})
    return table.compare(rows, records, baseline, bootstrap or {}, seeds or {})


def three_seed_records():
    """phi1 has phi0's records; phi3 gains 0.01, 0.02, 0.03 mAP@0.5 and 0.10, 0.11, 0.12 mAP@0.5:0.95."""
    base50, base95 = [0.50, 0.55, 0.47], [0.30, 0.28, 0.33]
    return ([fake_record(v, s, base50[s], base95[s]) for v in ("phi0", "phi1") for s in range(3)]
            + [fake_record("phi3", s, base50[s] + 0.01 * (s + 1), base95[s] + 0.10 + 0.01 * s) for s in range(3)])


def test_three_seeds_give_the_hand_worked_paired_t_interval(tmp_path):
    # diffs 0.01, 0.02, 0.03: mean 0.02, sd 0.01, half-width t(0.975, 2) * 0.01 / sqrt(3) = 4.3027 * 0.005774
    # = 0.02484; diffs 0.10, 0.11, 0.12: the same half-width around 0.11
    boot = {"phi1": Interval(np.array([0.01, 0.01]), np.array([0.005, 0.005]), np.array([0.02, 0.02])),
            "phi3": Interval(np.array([0.03, 0.12]), np.array([0.01, 0.09]), np.array([0.05, 0.15]))}
    rows = compared_rows(["0", "1", "3"], three_seed_records(), boot, {"phi1": 0, "phi3": 0})
    text = table.markdown_text(rows, [], "phi0")
    # with 3 seeds the seed interval decides: only it carries the mark
    assert ("| phi3 | +0.0200 [-0.0048, +0.0448] | +0.1100 [+0.0852, +0.1348] * | +0.0300 [+0.0100, +0.0500] | "
            "+0.1200 [+0.0900, +0.1500] |") in text
    assert "| phi0 | baseline | baseline | baseline | baseline |" in text
    # identical records: an interval of width 0 at 0, not marked (nor is the bootstrap that excludes 0)
    assert ("| phi1 | +0.0000 [+0.0000, +0.0000] | +0.0000 [+0.0000, +0.0000] | +0.0100 [+0.0050, +0.0200] | "
            "+0.0100 [+0.0050, +0.0200] |") in text
    assert "| phi0 | none | 0 1 2 | 0.5067 ± 0.0404 | 0.3033 ± 0.0252 | n/a | 0.4000 | 0.6000 |" in text
    table.write_csv(rows, tmp_path / "a.csv")
    by_label = {r["variant"]: r for r in read_rows(tmp_path / "a.csv")}
    assert float(by_label["phi3"]["d_map50_seeds_low"]) == pytest.approx(0.02 - 0.024841, abs=1e-5)
    assert float(by_label["phi3"]["d_map50_95_seeds_high"]) == pytest.approx(0.11 + 0.024841, abs=1e-5)
    assert [by_label[v]["d_map50_95_distinguishable"] for v in ("phi0", "phi1", "phi3")] == ["n/a", "False", "True"]
    assert by_label["phi0"]["map_small"] == "n/a" and by_label["phi3"]["paired_seeds"] == "0 1 2"


def test_the_chart_marks_only_the_differences_that_exclude_zero():
    rows = compared_rows(["0", "1", "3"], three_seed_records())
    points = table.difference_points(rows, "map50_95", "phi0")
    assert [(i, marked) for i, *_, marked in points] == [(1, False), (2, True)]
    assert points[1][1:4] == pytest.approx((0.11, 0.11 - 0.024841, 0.11 + 0.024841), abs=1e-5)
    fig = table.chart_figure(rows, 3, "phi0")
    diff_axes = fig.axes[1]
    assert [t.get_text() for t in diff_axes.texts] == ["*"]  # phi3's mAP@0.5:0.95 only
    markers = [line for line in diff_axes.lines if line.get_marker() == "o"]  # mAP@0.5 of phi1, phi3, then 0.5:0.95
    assert [line.get_markerfacecolor() != "white" for line in markers] == [False, False, False, True]
    assert len(diff_axes.containers) == 4  # an error bar for each difference of phi1 and phi3
    table.plt.close(fig)


def test_one_seed_shows_na_for_seeds_and_the_bootstrap_interval():
    records = [fake_record("phi0", 0, 0.50, 0.30), fake_record("phi3", 0, 0.52, 0.31)]
    boot = {"phi3": Interval(np.array([0.02, 0.01]), np.array([0.005, -0.01]), np.array([0.04, 0.03]))}
    rows = compared_rows(["0", "3"], records, boot, {"phi3": 0})
    text = table.markdown_text(rows, table.interval_notes(rows, "phi0", 1000, 100), "phi0")
    assert ("| phi3 | n/a (one seed) | n/a (one seed) | +0.0200 [+0.0050, +0.0400] * | "
            "+0.0100 [-0.0100, +0.0300] |") in text
    assert "Δ mAP@0.5 (bootstrap, seed 0)" in text and "1000 resamples of the 100 validation images" in text
    assert "understates the uncertainty" in text and "not equal" in text
    assert [marked for *_, marked in table.difference_points(rows, "map50", "phi0")] == [True]


def test_per_class_csv_holds_the_mean_paired_difference(tmp_path):
    records = [fake_record("phi0", 0, 0.5, 0.3, (0.5, 0.8, None)), fake_record("phi0", 1, 0.5, 0.3, (0.6, 0.8, None)),
               fake_record("phi3", 0, 0.5, 0.3, (0.7, 0.7, None)), fake_record("phi3", 1, 0.5, 0.3, (0.7, 0.9, None)),
               fake_record("phi3", 2, 0.5, 0.3, (0.0, 0.0, None))]  # seed 2 has no phi0 pair: left out
    classes, diffs = table.per_class_differences(records, ["phi0", "phi3"], "phi0")
    table.write_per_class_csv(classes, diffs, tmp_path / "pc.csv")
    rows = read_rows(tmp_path / "pc.csv")
    assert [r["class"] for r in rows] == CLASS_NAMES and list(rows[0]) == ["class", "phi3"]
    assert float(rows[0]["phi3"]) == pytest.approx(0.15)  # (0.2 + 0.1) / 2
    assert float(rows[1]["phi3"]) == pytest.approx(0.0)  # (-0.1 + 0.1) / 2
    assert rows[2]["phi3"] == "n/a"  # no ground truth of class c
    fig = table.per_class_figure(classes, diffs, "phi0")
    image = fig.axes[0].images[0]
    assert image.norm.vmin == -image.norm.vmax == pytest.approx(-0.15) and image.get_cmap().name.startswith("RdBu")
    assert [t.get_text() for t in fig.axes[0].texts] == ["+0.150", "+0.000", "n/a"]
    table.plt.close(fig)


def test_sweep_sites_trains_the_block_at_each_site_then_each_pair():
    sites = list(YoloBody.site_channels)
    assert {"feat1", "feat2", "upsample", "csp1", "csp2", "csp3"} <= set(sites)
    parse = ablate.make_parser().parse_args
    singles = ablate.variants_from_args(parse(["--sweep-sites", "cbam"]))
    assert [v.label for v in singles] == ["phi0", *(f"{s}=cbam" for s in sites)]
    assert singles[1].attention == "feat1=cbam" and singles[0].attention == "none"
    pairs = ablate.variants_from_args(parse(["--sweep-sites", "cbam", "--pairs"]))
    assert pairs[0].label == "phi0" and len(pairs) == 1 + len(sites) * (len(sites) - 1) // 2
    assert pairs[1].label == "feat1=cbam,feat2=cbam"
    chosen = [tuple(part.split("=")[0] for part in v.label.split(",")) for v in pairs[1:]]
    assert all(len(set(c)) == 2 for c in chosen) and len({frozenset(c) for c in chosen}) == len(chosen)
    with pytest.raises(ValueError, match="--pairs goes with --sweep-sites"):
        ablate.variants_from_args(parse(["--pairs"]))
    with pytest.raises(ValueError, match="needs an attention block"):
        ablate.variants_from_args(parse(["--sweep-sites", "none"]))
    with pytest.raises(SystemExit):  # --variants and --sweep-sites exclude each other
        parse(["--variants", "0", "--sweep-sites", "cbam"])


def test_baseline_is_the_first_variant_or_the_one_named():
    variants = ablate.parse_variants(["0", "3", "cbam"])
    assert runs.pick_baseline(variants, None) == "phi0"
    assert runs.pick_baseline(variants, "3") == "phi3" and runs.pick_baseline(variants, "cbam") == "cbam"
    with pytest.raises(ValueError, match="not one of the variants"):
        runs.pick_baseline(variants, "se")


def test_bootstrap_pairs_the_saved_detections_of_one_seed(tmp_path):
    """phi3 finds the two boxes of the first of 3 images and nothing else, phi0 and phi1 nothing: phi3's interval
    is the percentile bootstrap written out here, 40 resamples (--bootstrap) of numpy seed 0, each scored by
    evaluate_detections on the resampled lists; it spans from 0 (no copy of the first image) upwards."""
    from tests.helpers.voc import MAP_CLASSES as CLASSES, split_samples, write_map_voc
    from utils.eval.evaluator import evaluate_detections
    voc = write_map_voc(tmp_path)
    out = tmp_path / "abl"
    variants = ablate.parse_variants(["0", "1", "3"])
    truth = split_samples(voc)
    empty = [np.zeros((0, 6)) for _ in truth]
    first = [np.c_[truth[0].boxes, np.full(len(truth[0].labels), 0.9), truth[0].labels]] + empty[1:]
    for variant, found in zip(variants, (empty, empty, first)):  # phi1 finds what phi0 finds: nothing
        detect.write_coco_results(out / "runs" / f"{variant.slug}_s0" / runs.DETECTIONS_FILE, found,
                                  detect.image_keys(truth), CLASSES)
    records = [{**fake_record(v.label, 0, 0.0, 0.0), "class_names": CLASSES, "eval_images": 3} for v in variants]
    args = ablate.make_parser().parse_args(["--out", str(out), "--bootstrap", "40"])
    scorer = runs.RunScorer(str(voc), None, "cpu", workers=0)
    intervals, seeds = runs.bootstrap_differences(plan_of(args), variants, records, "phi0", scorer)
    assert seeds == {"phi1": 0, "phi3": 0}
    assert np.array_equal(intervals["phi1"].low, [0, 0]) and np.array_equal(intervals["phi1"].high, [0, 0])
    rng, diffs = np.random.default_rng(0), []
    for _ in range(40):
        idx = rng.integers(0, 3, size=3)
        score = evaluate_detections([first[i] for i in idx], [truth[i] for i in idx], CLASSES)
        diffs.append([score["map50"], score["map50_95"]])  # minus phi0's 0
    low, high = np.quantile(diffs, [0.025, 0.975], axis=0)
    assert np.all(low == 0) and high[0] == 1.0  # some resamples hold only copies of the first image
    assert np.allclose(intervals["phi3"].low, low) and np.allclose(intervals["phi3"].high, high)
    full = evaluate_detections(first, truth, CLASSES)  # mAP@0.5: one of 2 cats and one of 2 dogs found, 0.5
    assert full["map50"] == 0.5 and np.allclose(intervals["phi3"].diff, [0.5, full["map50_95"]])
    rows = compared_rows(["0", "1", "3"], records, intervals, seeds)
    assert [r["d_map50_distinguishable"] for r in rows] == [None, False, False]
    with pytest.raises(ValueError, match="holds 3 images now"):
        runs.bootstrap_differences(plan_of(args), variants, [{**r, "eval_images": 4} for r in records], "phi0", scorer)


def test_an_old_record_is_rescored_from_last_pth_without_training(tmp_path, monkeypatch, capsys):
    from tests.helpers.models import save_random_checkpoint
    from tests.helpers.voc import MAP_CLASSES as CLASSES, write_map_voc
    from utils.eval.evaluator import evaluate_detections
    voc = write_map_voc(tmp_path)
    out = tmp_path / "abl"
    save_random_checkpoint(out / "runs" / "phi0_s0" / "last.pth", CLASSES)
    old = {"variant": "phi0", "attention": "none", "seed": 0, "run": "logs/ablation/runs/phi0_s0",
           "train_seconds": 12.5, "map50": 0.75, "map50_95": 0.5, "epochs": 1, "eval_split": "VOC2007/test",
           "eval_images": 3, "eval_amp": "bf16", "num_classes": 2, "train_config": {}}  # as the code before wrote it
    (out / "done").mkdir()
    (out / "done" / "phi0_s0.json").write_text(json.dumps(old))
    monkeypatch.setattr(runs, "run_logged", lambda *a, **k: pytest.fail("train.py was run for a finished run"))
    args = ablate.make_parser().parse_args(["--out", str(out), "--device", "cpu", "--workers", "0"])
    scorer = runs.RunScorer(str(voc), None, "cpu", workers=0)
    (variant,) = ablate.parse_variants(["0"])
    record = runs.run_one(plan_of(args), variant, 0, [], scorer)
    printed = capsys.readouterr().out
    assert "phi0_s0: done before; re-scoring" in printed and "(no training)" in printed
    assert "note: phi0_s0: map50 0.7500 in the old record" in printed  # the random weights score ~0.1
    assert record["train_seconds"] == 12.5 and list(record["per_class_ap50"]) == CLASSES
    assert record["map_small"] is None and record["map_large"] is None  # no counted object is small or large
    assert json.loads((out / "done" / "phi0_s0.json").read_text()) == record
    samples = scorer.samples(CLASSES)  # the saved detections give the record's scores back
    found = detect.read_coco_results(out / "runs" / "phi0_s0" / runs.DETECTIONS_FILE, samples, CLASSES)
    again = evaluate_detections(found, samples, CLASSES)
    assert (again["map50"], again["map50_95"]) == pytest.approx((record["map50"], record["map50_95"]), abs=1e-12)
    assert runs.run_one(plan_of(args), variant, 0, [], scorer) == record  # complete now: skipped
    assert "phi0_s0: done before, skipped" in capsys.readouterr().out
    (out / "done" / "phi0_s0.json").write_text(json.dumps(old))
    (out / "runs" / "phi0_s0" / "last.pth").unlink()
    assert runs.run_one(plan_of(args), variant, 0, [], scorer) is None
    assert "last.pth is missing" in capsys.readouterr().err


def test_a_negative_bootstrap_count_is_refused(tmp_path, capsys):
    assert ablate.main(["--bootstrap", "-1", "--out", tmp_path / "abl"]) == 1
    assert "--bootstrap >= 0, got 1 and -1" in capsys.readouterr().err and not (tmp_path / "abl").exists()


@pytest.mark.slow
def test_data_format_and_images_reach_train_and_the_scorer_and_leave_an_old_budget_as_it_was(tmp_path):
    old = runs.budget_flags(plan_of(ablate.make_parser().parse_args(["--epochs", "2"])))
    assert old == ["--data", "VOCdevkit", "--epochs", "2"]  # the budget of a comparison started before the flags
    args = ablate.make_parser().parse_args(["--data", "x.json", "--data-format", "coco", "--images", "imgs"])
    assert runs.budget_flags(plan_of(args))[:6] == ["--data", "x.json", "--data-format", "coco", "--images", "imgs"]
    voc = write_tiny_voc(tmp_path / "VOCtiny", 2)
    scorer = runs.RunScorer(str(voc), "all", "cpu", 0, data_format="voc")
    assert scorer.dataset.data_format == "voc" and scorer.dataset.layout == "year"
    with pytest.raises(Exception, match="coco"):  # a VOC folder asked to be read as COCO is refused
        runs.RunScorer(str(voc), "all", "cpu", 0, data_format="coco")


def test_variants_may_name_a_fusion_which_reaches_train_py_only_when_not_concat(tmp_path):
    words = ["0", "fusion=gated", "enc,fusion=msf", "2,fusion=gated", "feat1=se,fusion=concat"]
    variants = ablate.parse_variants(words)
    assert [v.label for v in variants] == ["phi0", "fusion=gated", "enc,fusion=msf", "phi2,fusion=gated", "feat1=se"]
    assert [(v.spec, v.attention, v.fusion) for v in variants] == [
        ("0", "none", "concat"), ("none", "none", "gated"), ("enc", "enc", "msf"), ("2", "cbam", "gated"),
        ("feat1=se", "feat1=se", "concat")]
    assert variants[2].slug == "enc-fusion-msf"
    with pytest.raises(ValueError, match="listed twice"):
        ablate.parse_variants(["fusion=gated", "none,fusion=gated"])
    assert runs.pick_baseline(variants, "2,fusion=gated") == "phi2,fusion=gated"
    args = ablate.make_parser().parse_args(["--out", str(tmp_path), "--workers", "0"])
    plain, gated = (runs.train_command(plan_of(args), v, 0, ["--epochs", "1"]) for v in variants[:2])
    assert plain[2:6] == ["--attention", "0", "--seed", "0"]  # concat: the command line as before fusions existed
    assert gated[2:8] == ["--attention", "none", "--fusion", "gated", "--seed", "0"]
    assert gated[gated.index("--name") + 1] == "fusion-gated_s0"
    with pytest.raises(ValueError, match="may not set --fusion"):
        runs.budget_flags(plan_of(ablate.make_parser().parse_args(["--train-args=--fusion gated"])))
    assert "fusion" in runs.PER_RUN_KEYS  # a variant's own fusion is not a difference of the budget


def test_bench_builds_each_variant_with_its_fusion_at_the_bench_size():
    variants = ablate.parse_variants(["0", "fusion=gated", "feat1=cbam_joint"])  # cbam_joint needs the input size
    bench = runs.bench_variants(variants, 2, 64, runs=1, warmup=0)
    concat, gated = YoloBody(ANCHORS_MASK, 2), YoloBody(ANCHORS_MASK, 2, fusion="gated")
    assert bench["phi0"]["params"] == sum(p.numel() for p in concat.parameters())
    assert bench["fusion=gated"]["params"] == sum(p.numel() for p in gated.parameters())
    assert bench["feat1=cbam_joint"]["params"] > bench["phi0"]["params"]


def script_imports(name: str) -> set:
    """The top-level modules a script imports (any depth), by reading its source."""
    import ast
    from tests.conftest import ROOT
    tree = ast.parse((ROOT / f"{name}.py").read_text())
    return {alias.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names} | {
        (n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


@pytest.mark.parametrize("script", ["train", "ablate"])
def test_train_and_ablate_are_thin_and_import_no_other_script(script):
    from tests.conftest import ROOT
    assert len((ROOT / f"{script}.py").read_text().splitlines()) <= 150
    assert not script_imports(script) & ({"train", "get_map", "predict", "ablate"} - {script})


def test_runs_train_in_the_working_directory(tmp_path, monkeypatch):
    """train.py runs where ablate.py was started, so a relative --data is the dataset the runs are scored on."""
    from utils.eval.ablation_runs import run_logged

    monkeypatch.chdir(tmp_path)
    log = tmp_path / "run.log"
    assert run_logged([sys.executable, "-c", "import os; print(os.getcwd())"], log, echo=False) == 0
    assert log.read_text().splitlines()[-1] == str(tmp_path)
