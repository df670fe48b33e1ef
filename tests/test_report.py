"""`trl-grpo-ext report`: plots and report.md from a real GRPOExtTrainer log_history (and a hand-written one)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import prompt_dataset, tiny_args, tiny_tokenizer_cached
from trl_grpo_ext import GRPOExtTrainer, WeightedReward
from trl_grpo_ext.kit import resolve_model_path
from trl_grpo_ext.report import find_trainer_state, load_log_history, main, write_report
from trl_grpo_ext.rewards import accuracy, format_objective

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GRPO_PANELS = ["rewards.png", "ladder.png", "advantages.png", "completion_length.png", "diversity.png", "loss.png"]


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory):
    """A real 2-step GRPOExtTrainer run (ladder, rank advantages, two objectives) with its trainer_state.json."""
    out = tmp_path_factory.mktemp("grpo-run")
    args = tiny_args(
        out,
        max_steps=2,
        temperature_schedule="linear",
        advantage_estimator="rank",
        beta=0.04,  # so that `kl` is logged too
        bf16=False,
        gradient_checkpointing=False,
    )
    reward = WeightedReward(
        {"accuracy": accuracy, "format": format_objective(r"^\d+\Z")}, weights={"accuracy": 0.9, "format": 0.1}
    )
    trainer = GRPOExtTrainer(
        resolve_model_path("tiny:tiny"),  # a path: with beta > 0 TRL loads the reference model from it
        reward_funcs=reward,
        args=args,
        train_dataset=prompt_dataset(8),
        processing_class=tiny_tokenizer_cached(),
    )
    trainer.train()
    trainer.save_state()
    return out


def _is_png(path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(8) == PNG_MAGIC


def test_report_of_real_grpo_run_renders_every_panel(grpo_run, tmp_path):
    history = load_log_history(grpo_run)
    assert {"reward", "rewards/accuracy/mean", "ladder/reward_rung_0", "advantages/std", "kl"} <= set(history[0])

    paths = write_report(grpo_run, tmp_path / "report")

    assert [p.name for p in paths] == [*GRPO_PANELS, "report.md"]
    for path in paths[:-1]:
        assert _is_png(path), path
        assert 5_000 < path.stat().st_size < 150_000, (path, path.stat().st_size)
    markdown = paths[-1].read_text()
    for name in GRPO_PANELS:
        assert f"]({name})" in markdown
    first, last = history[0]["reward"], history[-2]["reward"]  # history[-1] is the end-of-training summary
    assert f"| `reward` | {first:.4g} | {last:.4g} |" in markdown
    assert "| `rewards/format/mean` |" in markdown
    assert "| `ladder/reward_rung_3` |" in markdown


def test_report_defaults_to_run_dir_report_and_cli_prints_paths(grpo_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(grpo_run, run)

    assert main([str(run)]) == 0

    printed = capsys.readouterr().out.split()
    assert printed == [str(run / "report" / name) for name in [*GRPO_PANELS, "report.md"]]


def test_report_through_the_cli_dispatcher(grpo_run, tmp_path, capsys):
    from trl_grpo_ext.cli import main as cli_main

    assert cli_main(["report", str(grpo_run), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "rewards.png").is_file()
    assert str(tmp_path / "out" / "report.md") in capsys.readouterr().out


def test_report_uses_newest_checkpoint(grpo_run, tmp_path):
    state = json.loads((grpo_run / "trainer_state.json").read_text())
    for step in (1, 10, 2):  # numeric order, not lexicographic: checkpoint-10 is the newest
        checkpoint = tmp_path / f"checkpoint-{step}"
        checkpoint.mkdir()
        (checkpoint / "trainer_state.json").write_text(json.dumps({**state, "global_step": step}))

    assert find_trainer_state(tmp_path) == tmp_path / "checkpoint-10" / "trainer_state.json"
    paths = write_report(tmp_path)
    assert paths[-1] == tmp_path / "report" / "report.md"
    assert "checkpoint-10" in paths[-1].read_text()


def test_report_skips_panels_whose_metrics_are_absent(tmp_path):
    # A hand-written SFT-like history, in addition to the real GRPO one above: only the loss panel applies.
    history = [
        {"step": 10, "epoch": 0.1, "loss": 2.5, "mean_token_accuracy": 0.3, "learning_rate": 1e-3},
        {"step": 20, "epoch": 0.2, "loss": 1.5, "mean_token_accuracy": 0.5, "learning_rate": 1e-3},
        {"step": 20, "epoch": 0.2, "eval_loss": 1.7},
        {"step": 20, "train_runtime": 3.0, "train_loss": 2.0},
    ]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": history}))

    paths = write_report(tmp_path, tmp_path / "out")

    assert [p.name for p in paths] == ["loss.png", "report.md"]
    markdown = paths[-1].read_text()
    assert "| `loss` | 2.5 | 1.5 | -1 |" in markdown
    assert "reward" not in markdown


def test_report_without_trainer_state_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: No trainer_state.json in")
    assert "save_state()" in err
    assert main([str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_report_draws_each_online_reward_model(tmp_path):
    # Two online reward models (metric prefixes `rm` and `prefs`): one figure, a row each; their rows in report.md.
    history = [
        {
            "step": 1,
            "loss": 0.1,
            "rm/loss": 0.69,
            "rm/labels_used": 4.0,
            "rm/budget_left": 6.0,
            "prefs/labels_used": 2.0,
        },
        {
            "step": 2,
            "loss": 0.2,
            "rm/loss": 0.55,
            "rm/pair_accuracy": 0.5,
            "rm/labels_used": 8.0,
            "rm/budget_left": 2.0,
        },
        {"step": 3, "loss": 0.3, "rm/pair_accuracy": 0.75, "rm/labels_used": 10.0, "rm/budget_left": 0.0},
        {"step": 3, "train_runtime": 3.0, "train_loss": 0.2},
    ]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": history}))

    paths = write_report(tmp_path, tmp_path / "out")

    assert [p.name for p in paths] == ["loss.png", "online_rm.png", "report.md"]
    assert _is_png(paths[1]) and paths[1].stat().st_size > 20_000  # two rows of three panels
    markdown = paths[-1].read_text()
    assert "| `rm/loss` | 0.69 | 0.55 | -0.14 |" in markdown
    assert "| `rm/pair_accuracy` | 0.5 | 0.75 | +0.25 |" in markdown
    assert "| `rm/labels_used` | 4 | 10 | +6 |" in markdown
    assert "| `rm/budget_left` | 6 | 0 | -6 |" in markdown
    assert "| `prefs/labels_used` | 2 | 2 | +0 |" in markdown
    assert "gold_agreement" not in markdown  # not logged: no row


def test_report_plots_what_the_speed_options_saved(tmp_path):
    """A real run with share_prompt and skip_zero_advantage: `efficiency.png` and both fractions in report.md."""
    out = tmp_path / "run"
    args = tiny_args(out, max_steps=2, gradient_checkpointing=False, share_prompt=True, skip_zero_advantage=True)
    trainer = GRPOExtTrainer(
        resolve_model_path("tiny:tiny"),
        reward_funcs=lambda completions, **kwargs: [float(c[:1].isdigit()) for c in completions],
        args=args,
        train_dataset=prompt_dataset(8),
        processing_class=tiny_tokenizer_cached(),
    )
    trainer.train()
    trainer.save_state()

    paths = write_report(out, tmp_path / "report")

    assert "efficiency.png" in [p.name for p in paths] and _is_png(tmp_path / "report" / "efficiency.png")
    markdown = paths[-1].read_text()
    assert "| `efficiency/skipped_rows_frac` |" in markdown
    assert "| `efficiency/prompt_tokens_saved_frac` |" in markdown
