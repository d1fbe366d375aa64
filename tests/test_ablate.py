"""ablate.py: variants, budget checks, resume decisions, and a tiny end-to-end ablation run twice (skips)."""
import csv
import json
import math
import sys

import pytest
import torch

import ablate
from tests.tiny_voc import write_tiny_voc

@pytest.fixture(autouse=True)
def scan_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_SCAN_CACHE", str(tmp_path / "scan_cache"))


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
        ablate.budget_flags(args)
    args = ablate.make_parser().parse_args(["--epochs", "2", "--train-args=--lr 0.02"])
    assert ablate.budget_flags(args) == ["--data", "VOCdevkit", "--epochs", "2", "--lr", "0.02"]


def test_unknown_train_flags_are_caught_before_training():
    args = ablate.make_parser().parse_args(["--train-args=--lr 0.02 --no-such-flag 3"])
    with pytest.raises(ValueError, match="--no-such-flag"):
        ablate.budget_flags(args)


def test_a_changed_budget_is_refused_once_a_run_made_something(tmp_path):
    ablate.check_budget(tmp_path, {"train_flags": ["--epochs", "2"]})
    ablate.check_budget(tmp_path, {"train_flags": ["--epochs", "3"]})  # nothing trained yet: a new budget is fine
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "phi0_s0.json").write_text("{}")
    ablate.check_budget(tmp_path, {"train_flags": ["--epochs", "3"]})  # same budget: fine
    with pytest.raises(ValueError, match="another budget"):
        ablate.check_budget(tmp_path, {"train_flags": ["--epochs", "2"]})


def test_summary_reports_mean_and_sample_std_over_seeds():
    variants = ablate.parse_variants(["0"])
    records = [{"variant": "phi0", "seed": s, "map50": m, "map50_95": m / 2} for s, m in ((1, 0.4), (0, 0.2))]
    bench = {"phi0": {"params": 10, "gflops": 1.0, "latency_ms": 2.0}}
    (row,) = ablate.summarise(variants, records, bench)
    assert row["seeds"] == "0 1"
    assert row["map50"] == pytest.approx(0.3) and row["map50_std"] == pytest.approx(math.sqrt(0.02))
    assert row["map50_95_std"] == pytest.approx(math.sqrt(0.005))
    (single,) = ablate.summarise(variants, records[:1], bench)
    assert single["map50"] == pytest.approx(0.4) and single["map50_std"] is None


def test_config_differences_name_the_settings_that_differ():
    records = [{"train_config": {"epochs": 1, "lr": 0.01}}, {"train_config": {"epochs": 2, "lr": 0.01}}]
    assert ablate.config_differences(records) == ["epochs"]
    assert ablate.config_differences(records[:1]) == []


def test_interrupted_run_resumes_from_last_pth_or_restarts_without_one(tmp_path):
    args = ablate.make_parser().parse_args(["--out", str(tmp_path), "--workers", "0"])
    (variant,) = ablate.parse_variants(["eca"])
    stale = tmp_path / "runs" / "eca_s1"
    stale.mkdir(parents=True)
    (stale / "results.csv").write_text("epoch\n")
    fresh = ablate.train_command(args, variant, 1, ["--epochs", "1"])
    assert not stale.exists()
    assert fresh[fresh.index("--attention") + 1] == "eca" and fresh[fresh.index("--seed") + 1] == "1"
    assert fresh[fresh.index("--name") + 1] == "eca_s1" and "--resume" not in fresh
    stale.mkdir(parents=True)
    (stale / "last.pth").write_bytes(b"")
    resumed = ablate.train_command(args, variant, 1, ["--epochs", "1"])
    assert resumed[resumed.index("--resume") + 1] == str((stale / "last.pth").resolve())
    assert "--attention" not in resumed and "--epochs" not in resumed  # the run keeps its own settings


def test_run_logged_keeps_the_output_and_the_exit_code(tmp_path, capsys):
    log = tmp_path / "logs" / "x.log"
    cmd = [sys.executable, "-c", "print('hello'); raise SystemExit(3)"]
    assert ablate.run_logged(cmd, log, echo=True) == 3
    assert "hello" in log.read_text() and "  | hello" in capsys.readouterr().out
    assert ablate.run_logged(cmd, log, echo=False) == 3
    assert log.read_text().splitlines().count("hello") == 2 and capsys.readouterr().out == ""


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_ablation_writes_one_row_per_variant_and_skips_finished_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # train.py subprocesses: tiny tensors gain nothing from threads
    voc = write_tiny_voc(tmp_path / "VOCtiny", 4)
    out = tmp_path / "ablation"
    argv = ["--variants", "0,3", "--out", out, "--data", voc, "--classes", voc / "classes.txt", "--epochs", "1",
            "--input-size", "64", "--batch-size", "2", "--eval-period", "0", "--workers", "0", "--device", "cpu",
            "--bench-size", "64", "--latency-runs", "2", "--latency-warmup", "1", "--threads", "1", "--quiet",
            "--train-args=--mosaic 0 --amp off"]
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
    assert torch.get_num_threads() == threads_before  # --threads only while timing
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "done" / "phi3_s0.json").read_text())["epochs"] == 1

    # Second invocation: both runs are finished, so nothing is trained or scored again; the table is rewritten.
    weights = out / "runs" / "phi0_s0" / "last.pth"
    mtime = weights.stat().st_mtime_ns
    (out / "ablation.csv").unlink()
    capsys.readouterr()
    assert ablate.main(argv) == 0
    printed = capsys.readouterr().out
    assert "phi0_s0: done before, skipped" in printed and "phi3_s0: done before, skipped" in printed
    assert "training attention" not in printed and "resuming" not in printed
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
    from tests.test_get_map import CLASSES, save_random_checkpoint, write_voc
    monkeypatch.setattr("utils.core.amp.cpu_supports_bf16", lambda *args: True)  # --amp auto is bf16 on such CPUs
    voc = write_voc(tmp_path)
    weights = tmp_path / "run" / "last.pth"
    save_random_checkpoint(weights, CLASSES)
    calls, detect = [], utils.eval.detect.detect_samples

    def spy(*args, **kwargs):
        calls.append({k: kwargs.get(k) for k in ("amp", "conf_thres", "nms_thres", "batch_size", "scale_x_y")})
        return detect(*args, **kwargs)

    monkeypatch.setattr(utils.eval.detect, "detect_samples", spy)
    record = ablate.RunScorer(str(voc), None, "cpu", workers=0)(weights)
    assert get_map.main(["--weights", str(weights), "--data", str(voc), "--device", "cpu", "--out", str(tmp_path / "m"),
                        "--no-plots"]) == 0
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert len(calls) == 2 and calls[0] == calls[1]
    assert calls[0]["amp"] == torch.bfloat16 and calls[0]["conf_thres"] == 0.001 and calls[0]["batch_size"] == 8
    assert (record["map50"], record["map50_95"]) == (summary["map50"], summary["map50_95"])
    assert (record["eval_split"], record["eval_images"]) == (summary["settings"]["split"], 3)
    assert record["eval_amp"] == "bf16"
