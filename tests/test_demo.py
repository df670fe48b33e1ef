"""The offline addition task (`trl_grpo_ext.kit.tasks`) and `trl-grpo-ext demo`."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import tiny_model, tiny_tokenizer_cached
from trl_grpo_ext.kit.tasks import (
    REVERSAL_PREFIX,
    SPLITS,
    arithmetic_dataset,
    is_correct,
    num_problems,
    problem_split,
    reversal_dataset,
)

# ------------------------------------------------------------------------------------------------------------ task


def test_arithmetic_dataset_columns_and_answers():
    ds = arithmetic_dataset(64, seed=3)
    assert ds.column_names == ["prompt", "answer"]
    for prompt, answer in zip(ds["prompt"], ds["answer"]):
        a, b = re.fullmatch(r"(\d+)\+(\d+)=", prompt).groups()
        assert min(int(a), int(b)) <= 9 and max(int(a), int(b)) <= 99
        assert answer == str(int(a) + int(b))


def test_splits_are_disjoint_and_cover_every_problem():
    problems = {split: set(arithmetic_dataset(num_problems(split), seed=0, split=split)["prompt"]) for split in SPLITS}
    assert problems["train"].isdisjoint(problems["validation"])
    assert problems["train"].isdisjoint(problems["test"])
    assert problems["validation"].isdisjoint(problems["test"])
    assert sum(len(p) for p in problems.values()) == 100 * 10 * 2 - 10 * 10  # one operand < 10, either order
    assert len(problems["test"]) >= 150 and len(problems["validation"]) >= 150
    assert all(problem_split(prompt) == split for split, prompts in problems.items() for prompt in prompts)


def test_arithmetic_dataset_is_deterministic_and_seeded():
    assert arithmetic_dataset(50, seed=1)["prompt"] == arithmetic_dataset(50, seed=1)["prompt"]
    assert arithmetic_dataset(50, seed=1)["prompt"] != arithmetic_dataset(50, seed=2)["prompt"]
    held_out = arithmetic_dataset(500, seed=0, split="heldout")  # more rows than problems: the split is cycled
    assert len(held_out) == 500 and len(set(held_out["prompt"])) == num_problems("test")


def test_arithmetic_dataset_validates_its_arguments():
    with pytest.raises(ValueError, match="`split` must be one of"):
        arithmetic_dataset(4, seed=0, split="dev")
    with pytest.raises(ValueError, match="`num_examples` should be a positive integer, got 0"):
        arithmetic_dataset(0, seed=0)


def test_reversal_dataset_answers_lengths_and_disjoint_splits():
    splits = {split: reversal_dataset(300, seed=0, split=split, min_length=3, max_length=7) for split in SPLITS}
    for split, ds in splits.items():
        assert ds.column_names == ["prompt", "answer"]
        assert len(set(ds["prompt"])) == 300  # distinct rows
        for prompt, answer in zip(ds["prompt"], ds["answer"]):
            digits = re.fullmatch(rf"{REVERSAL_PREFIX}([1-9]{{3,7}})=", prompt).group(1)
            assert answer == digits[::-1] and problem_split(prompt) == split
    prompts = {split: set(ds["prompt"]) for split, ds in splits.items()}
    assert prompts["train"].isdisjoint(prompts["test"]) and prompts["train"].isdisjoint(prompts["validation"])
    assert reversal_dataset(20, seed=4)["prompt"] == reversal_dataset(20, seed=4)["prompt"]
    assert reversal_dataset(20, seed=4)["prompt"] != reversal_dataset(20, seed=5)["prompt"]
    with pytest.raises(ValueError, match="`num_examples` should be at most"):
        reversal_dataset(100, seed=0, min_length=2, max_length=2)
    with pytest.raises(ValueError, match="`min_length` and `max_length`"):
        reversal_dataset(1, seed=0, min_length=5, max_length=4)


def test_is_correct_is_exact():
    assert is_correct("55", "55") and is_correct(" 55\n", "55")
    assert not any(is_correct(text, "55") for text in ["055", "55.", "5 5", "55 55", "it is 55", ""])


def test_greedy_accuracy_of_untrained_model_is_low_and_restores_state():
    from trl_grpo_ext.demos.common import greedy_accuracy

    model, tokenizer = tiny_model(), tiny_tokenizer_cached()
    model.train()
    tokenizer.padding_side = "right"
    try:
        dataset = reversal_dataset(20, seed=0, split="validation")
        accuracy = greedy_accuracy(model, tokenizer, dataset, max_new_tokens=8, batch_size=8)
        assert 0.0 <= accuracy <= 0.1
        assert model.training and tokenizer.padding_side == "right"
    finally:
        tokenizer.padding_side = "left"


# ------------------------------------------------------------------------------------------------------------ demo


@pytest.mark.slow
def test_demo_quick_shows_a_measured_heldout_gain(tmp_path, capsys):
    from trl_grpo_ext.demos import main
    from trl_grpo_ext.demos.tiny import QUICK

    assert main(["--quick", "--seed", "0", "--output-dir", str(tmp_path)]) == 0

    summary = json.loads((tmp_path / "summary.json").read_text())
    before, after = summary["heldout_accuracy_before"], summary["heldout_accuracy_after"]
    assert 0.0 < before < 0.6  # a partial warm start, with room left for GRPO
    assert after > before, f"GRPO gave no held-out gain: {before:.3f} -> {after:.3f}"
    assert summary["steps"] == QUICK.grpo_steps and summary["train_seconds"] > 0
    assert summary["heldout_size"] == QUICK.num_heldout
    for key in ("sft_steps", "sft_validation_accuracy", "total_seconds"):
        assert key in summary

    pngs = [path for path in summary["report_files"] if path.endswith(".png")]
    assert {p.rsplit("/", 1)[-1] for p in pngs} >= {"rewards.png", "ladder.png", "advantages.png"}
    out = capsys.readouterr().out
    assert all(path in out for path in pngs)
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"held-out accuracy: {100 * before:.1f}% -> {100 * after:.1f}% \(\+{100 * (after - before):.1f} points\) "
        rf"after {QUICK.grpo_steps} GRPO steps",
        last,
    ), last
