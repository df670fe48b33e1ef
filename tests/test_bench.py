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


# ------------------------------------------------------------------------------------------------- --model NAME
def test_model_flag_accepts_kit_names_and_refuses_unknown_ones(capsys):
    parser = bench._build_parser()
    assert parser.parse_args(["--model", "smollm2:135m-instruct"]).model == "smollm2:135m-instruct"
    assert parser.parse_args([]).model is None  # default: the tiny models, as before

    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--model", "smollm2:1.7b"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --model: Unknown SmolLM2 model `smollm2:1.7b`" in err and "'135m-instruct'" in err

    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "no/such-model"])
    assert "'no/such-model' is neither a kit name" in capsys.readouterr().err


def test_model_flag_is_refused_with_only_benchmarks_that_take_no_model(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--model", "smollm2:135m-instruct", "--only", "estimators,judge"])
    assert exit_.value.code == 2
    assert "`--model` applies to the benchmarks overhead, ladder, vllm" in capsys.readouterr().err


def test_run_benchmarks_passes_the_model_to_overhead_and_ladder_only(monkeypatch):
    calls = {}

    def recorder(name):
        def bench_function(**kwargs):
            calls[name] = kwargs
            return [{"bench": name}]

        return bench_function

    def load(name):
        return recorder(name), None

    monkeypatch.setattr(bench, "_load", load)
    results, errors, _ = bench.run_benchmarks(
        ["overhead", "ladder", "estimators"], quick=True, pairs=2, echo=None, model="smollm2:135m-instruct"
    )

    assert errors == {} and set(results) == {"overhead", "ladder", "estimators"}
    assert calls["overhead"] == {"quick": True, "pairs": 2, "threads": 1, "model": "smollm2:135m-instruct"}
    assert calls["ladder"] == {"quick": True, "model": "smollm2:135m-instruct"}
    assert calls["estimators"] == {"quick": True}

    calls.clear()
    bench.run_benchmarks(["overhead", "ladder"], quick=True, echo=None)  # no --model: today's calls exactly
    assert "model" not in calls["overhead"] and calls["ladder"] == {"quick": True}


def test_main_records_the_model_in_the_environment(tmp_path, monkeypatch):
    seen = {}

    def bench_ladder(quick, model=None):
        seen["model"] = model
        return [{"bench": "ladder", "model": "m"}]

    monkeypatch.setattr(bench, "_load", lambda name: (bench_ladder, None))
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--only", "ladder", "--model", "smollm2:135m-instruct", "--out", str(out)]) == 0
    assert seen["model"] == "smollm2:135m-instruct"
    assert json.loads(out.read_text())["environment"]["model"] == "smollm2:135m-instruct"


def test_overhead_run_on_a_checkpoint_uses_its_tokenizer_and_chat_prompts(tmp_path):
    # A tiny-kit checkpoint stands in for the real model: the same code path (path, own tokenizer, chat data, LoRA).
    from trl_grpo_ext.kit import resolve_model_path

    spec = {
        "trainer": "ext",
        "model": {"path": resolve_model_path("tiny:tiny")},
        "tokenizer": "model",
        "data": "chat_addition",
        "steps": 1,
        "batch_size": 4,
        "num_generations": 4,
        "completion_tokens": 4,
        "num_prompts": 8,
        "seed": 0,
        "threads": None,
        "bf16": False,
        "gradient_checkpointing": False,
        "peft": "lora",
        "output_dir": str(tmp_path),
    }
    result = train_once(spec)

    assert result["generated_tokens"] == 4 * 4
    assert 0 < result["trainable_params"] < result["params"]  # LoRA
    assert result["reward_funcs"] == ["accuracy", "readability", "novelty"]


def test_ladder_bench_on_a_checkpoint_renders_chat_prompts():
    from trl_grpo_ext.bench.ladder import bench_ladder

    (row,) = bench_ladder(quick=True, model="tiny:tiny")
    assert (row["model"], row["prompts"], row["K"], row["new_tokens"], row["repeats"]) == ("tiny-tiny", 4, 8, 8, 2)
    assert row["model_path"].endswith("tiny-tiny-seed0") and row["peak_rss_mb"] > 0


@pytest.mark.slow
def test_ladder_bench_quick_on_smollm2():
    # Converts the GGUF into the session's kit cache first; ~100 s in all on 2 busy cores.
    pytest.importorskip("gguf")
    from trl_grpo_ext.bench.ladder import bench_ladder

    (row,) = bench_ladder(quick=True, model="smollm2:135m-instruct")
    assert row["model"] == "smollm2-135m-instruct"
    assert row["params"] == pytest.approx(134.5e6, rel=0.01)
    assert row["ladder_s"] > 0 and row["constant_s"] > 0 and row["k_calls_s"] > 0


def test_summarize_speed_reports_median_ratios_targets_and_mfu():
    from trl_grpo_ext.bench.speed import summarize_speed

    def run(pair, trainer, step, loss, generate, rss, digest="same", weights=(0.0, 1.0)):
        return {
            "pair": pair, "trainer": trainer, "step_s": step, "loss_s": loss, "generate_s": generate,
            "peak_rss_mb": rss, "completion_digest": digest, "final_weights": list(weights), "params": 1000,
            "loss_tokens_per_step": 50, "rows": 8, "prompt_tokens": 20, "skipped_rows_frac": 0.5 if trainer == "ext" else 0.0,
        }  # fmt: skip

    runs = [
        run(0, "ext", 3.0, 1.0, 2.0, 100.0), run(0, "trl", 10.0, 8.0, 2.0, 400.0),
        run(1, "trl", 12.0, 9.0, 3.0, 400.0), run(1, "ext", 4.0, 1.8, 2.2, 120.0, weights=(0.0, 1.0 + 2e-7)),
    ]  # fmt: skip
    row = summarize_speed({"bench": "speed", "model": "m", "shape": "demo"}, runs, peak_gflops=1.0)

    assert row["pairs"] == 2 and row["same_completions"] is True
    assert row["step_ratio"] == pytest.approx((0.3 + 4 / 12) / 2) and row["step_pass"] is True
    assert row["loss_ratio"] == pytest.approx((1 / 8 + 0.2) / 2) and row["loss_pass"] is True  # demo target 0.4
    assert row["rss_ratio"] == pytest.approx((0.25 + 0.3) / 2) and row["memory_pass"] is True
    assert row["final_weight_max_diff"] == pytest.approx(1e-7)
    # MFU: 4 x 1000 parameters x 50 tokens = 2e5 FLOPs over the median loss pass, against a 1 GFLOP/s peak
    assert row["trl_mfu"] == pytest.approx(2e5 / 8.5 / 1e9) and row["ext_mfu"] == pytest.approx(2e5 / 1.4 / 1e9)
    assert "final_weights" not in row["runs"][0]

    runs[1]["completion_digest"] = "other"
    assert summarize_speed({"bench": "speed", "model": "m", "shape": "long"}, runs, 1.0)["same_completions"] is False


@pytest.mark.slow
def test_speed_bench_quick_trains_both_arms_on_the_same_completions(tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert bench.main(["--only", "speed", "--quick", "--pairs", "1", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["benchmarks"]["speed"]
    assert row["shape"] == "quick" and row["same_completions"] is True
    assert row["final_weight_max_diff"] < 1e-5
    assert {run["trainer"] for run in row["runs"]} == {"ext", "trl"}
    assert "speed" in capsys.readouterr().out
