"""Smoke tests of `trl-grpo-ext bench`: the command runs, the JSON has its keys, the overhead runs are comparable.

Benchmarks are not tests: nothing here checks a timing against a target.
"""

import json

import pytest
import torch
from transformers import Qwen2ForCausalLM

from trl_grpo_ext import bench
from trl_grpo_ext.bench.gpu import QWEN25_SHAPES, _qwen2_config
from trl_grpo_ext.bench.overhead import summarize_pairs, train_once


def test_bench_quick_writes_tables_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    status = bench.main(["--quick", "--only", "ladder,estimators", "--out", str(out)])
    printed = capsys.readouterr().out

    assert status == 0
    assert "== ladder" in printed and "== estimators" in printed and "ladder_vs_constant" in printed
    report = json.loads(out.read_text())
    assert set(report) == {"environment", "benchmarks", "errors"}
    env = report["environment"]
    for key in ("date", "command", "platform", "cpu_count", "python", "torch_threads", "versions", "seconds"):
        assert key in env, key
    assert env["command"] == f"trl-grpo-ext bench --quick --only ladder,estimators --out {out}"
    for library in ("torch", "transformers", "trl", "peft"):
        assert env["versions"][library], library
    assert report["errors"] == {}
    assert set(report["benchmarks"]) == {"ladder", "estimators"}
    (ladder,) = report["benchmarks"]["ladder"]
    for key in ("model", "K", "ladder_s", "constant_s", "k_calls_s", "ladder_vs_constant", "k_calls_vs_ladder"):
        assert key in ladder, key
    assert report["benchmarks"]["estimators"], "no estimator rows"
    assert env["torch_threads"] == 1
    assert torch.get_num_threads() == threads  # main restored the thread count it pinned


def test_unavailable_benchmark_is_reported_not_fatal(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(bench.BENCHMARKS, "missing", ("no_such_module", "bench_missing"))
    out = tmp_path / "bench.json"
    status = bench.main(["--quick", "--only", "ladder,missing", "--out", str(out)])

    assert status == 1
    report = json.loads(out.read_text())
    assert "not found" in report["errors"]["missing"]
    assert report["benchmarks"]["ladder"], "the other benchmark still ran"
    assert "ERROR: module trl_grpo_ext.bench.no_such_module not found" in capsys.readouterr().out


def test_unknown_benchmark_name_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--only", "overhead,nope"])
    assert exit_.value.code == 2
    assert "unknown benchmark(s) ['nope']" in capsys.readouterr().err


@pytest.mark.parametrize("trainer", ["ext", "trl"])
def test_overhead_run_generates_fixed_length_completions(trainer, tmp_path):
    # In-process here (the benchmark runs it in a child process); both trainers must do the same generation work.
    spec = {
        "trainer": trainer,
        "model": {"tiny": "tiny", "vocab_size": None, "seed": 0},
        "steps": 2,
        "batch_size": 4,
        "num_generations": 4,
        "completion_tokens": 6,
        "num_prompts": 8,
        "seed": 0,
        "threads": None,
        "bf16": False,
        "gradient_checkpointing": False,
        "peft": None,
        "output_dir": str(tmp_path),
    }
    result = train_once(spec)

    assert result["generated_rows"] == 2 * 4
    assert result["generated_tokens"] == 2 * 4 * 6  # min_new_tokens: no completion ends early
    assert len(result["step_s"]) == 2 and result["train_s"] > 0 and result["peak_rss_mb"] > 0
    assert result["params"] == result["trainable_params"] > 0
    assert result["reward_funcs"] == ["accuracy", "readability", "novelty"]
    assert result["reward_weights"] == pytest.approx([0.7, 0.2, 0.1])
    ext = trainer == "ext"
    assert result["ladder_logged"] is ext
    assert (result["temperature_schedule"], result["advantage_estimator"]) == (
        ("linear", "rank") if ext else ("constant", "zscore")
    )


def test_summarize_pairs_reports_per_pair_and_median_ratios():
    def run(pair, trainer, seconds, rss):
        return {"pair": pair, "trainer": trainer, "train_s": seconds, "peak_rss_mb": rss, "import_rss_mb": 400.0}

    runs = [
        run(0, "ext", 10.2, 510.0),
        run(0, "trl", 10.0, 500.0),
        run(1, "trl", 10.0, 500.0),
        run(1, "ext", 9.9, 500.0),
        run(2, "ext", 10.6, 505.0),
        run(2, "trl", 10.0, 500.0),
    ]
    row = summarize_pairs({"bench": "overhead", "model": "m"}, runs)

    assert row["pairs"] == 3
    assert row["time_ratios"] == pytest.approx([1.02, 0.99, 1.06])
    assert row["time_ratio"] == pytest.approx(1.02) and row["time_pass"] is True
    assert row["rss_ratios"] == pytest.approx([1.02, 1.0, 1.01])
    assert row["rss_ratio"] == pytest.approx(1.01) and row["memory_pass"] is True
    assert row["rss_growth_ratios"] == pytest.approx([1.1, 1.0, 1.05])
    assert row["steady_ratio"] is None and row["steady_ratios"] == []  # no per-step times in these runs


def test_gpu_shapes_match_qwen25_parameter_counts():
    # Published totals: 0.49B, 1.54B, 7.61B parameters.
    expected = {"0.5b": 0.494e9, "1.5b": 1.544e9, "7b": 7.616e9}
    for name in QWEN25_SHAPES:
        with torch.device("meta"):
            model = Qwen2ForCausalLM(_qwen2_config(name))
        assert model.num_parameters() == pytest.approx(expected[name], rel=0.005), name


def test_judge_bench_quick_row():
    from trl_grpo_ext.bench.judge import bench_judge

    (row,) = bench_judge(quick=True)
    assert (row["model"], row["completions"], row["principles"]) == ("tiny:tiny", 64, 3)
    assert row["s_per_1k_completions"] == pytest.approx(row["seconds"] * 1000 / 64, rel=0.01)
    assert row["judge_texts_per_s"] == pytest.approx(64 * 3 / row["seconds"], rel=0.01)
    assert row["prompt_tokens"] > 100  # the default template around the prompt and completion, character tokens
