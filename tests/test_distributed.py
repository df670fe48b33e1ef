"""Two CPU processes (torchrun, gloo) agree with one: ladder slots, advantages and group objectives are global.

`tests/dist/record_ladder.py` trains 2 steps with 6 rows per process in groups of 4, so the second group of every
generation batch (global rows 4-7) straddles the two processes. Each process records what it did; the tests below
recompute it in this one process from the global lists.
"""

import collections
import json
import math
from pathlib import Path

import pytest
import torch

from tests.dist import record_ladder as run
from tests.helpers import digit_reward, run_torchrun
from trl_grpo_ext.advantages import estimate_advantages, rank_advantages
from trl_grpo_ext.kit import resolve_model_path
from trl_grpo_ext.rewards import novelty

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[1]
NUM_PROCESSES = 2
K = run.NUM_GENERATIONS
ROWS = run.PER_DEVICE_BATCH


def _expected_ladder(step: int, max_steps: int) -> list[float]:
    """The linear ladder of record_ladder.CONFIG at `step`, written out independently of trl_grpo_ext.sampling."""
    (start_min, start_max), (final_min, final_max) = (
        run.CONFIG["temperature_range"],
        run.CONFIG["temperature_range_final"],
    )
    fraction = step / max_steps
    t_min = start_min + (final_min - start_min) * fraction
    t_max = start_max + (final_max - start_max) * fraction
    return [t_min + (t_max - t_min) * i / (K - 1) for i in range(K)]


def _torchrun(tmp_path_factory, script: str, prefix: str) -> list[dict]:
    """Launch `script OUTPUT_DIR MODEL_PATH` on NUM_PROCESSES CPU processes; return each process's OUTPUT_DIR/{prefix}{rank}.json."""
    cache = tmp_path_factory.getbasetemp() / "tiny-cache"  # conftest's per-session cache
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRL_GRPO_EXT_CACHE", str(cache))
        model_path = resolve_model_path("tiny:tiny")  # materialised once, here, not by two racing processes
    output_dir = tmp_path_factory.mktemp("distributed")
    run_torchrun(script, output_dir, model_path, nproc=NUM_PROCESSES, env={"TRL_GRPO_EXT_CACHE": str(cache)})
    return [json.loads((output_dir / f"{prefix}{rank}.json").read_text()) for rank in range(NUM_PROCESSES)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Per process, the JSON written by record_ladder.py (one torchrun launch for the whole module)."""
    return _torchrun(tmp_path_factory, "tests/dist/record_ladder.py", "rank")


def _steps(ranks) -> list[list[dict]]:
    """records[step][rank]: the generation batches of the run, each as seen by every process."""
    per_rank = [r["records"] for r in ranks]
    assert [len(records) for records in per_rank] == [run.MAX_STEPS] * NUM_PROCESSES
    return [list(batch) for batch in zip(*per_rank)]


def test_layout_has_a_group_straddling_processes(ranks):
    for batch in _steps(ranks):
        assert [rec["process_index"] for rec in batch] == list(range(NUM_PROCESSES))
        assert all(rec["num_processes"] == NUM_PROCESSES and rec["num_rows"] == ROWS for rec in batch)
    owners = collections.defaultdict(set)
    for global_row in range(NUM_PROCESSES * ROWS):
        owners[global_row // K].add(global_row // ROWS)
    assert any(len(processes) > 1 for processes in owners.values()), dict(owners)
    # So the slot of a row is not its local index modulo K on the second process.
    assert any((ROWS + j) % K != j % K for j in range(ROWS))


def test_each_row_is_sampled_at_the_ladder_temperature_of_its_global_slot(ranks):
    for batch in _steps(ranks):
        for rec in batch:
            ladder = _expected_ladder(rec["global_step"], rec["max_steps"])
            expected = [ladder[(rec["process_index"] * ROWS + j) % K] for j in range(ROWS)]
            assert len(rec["processor_temperatures"]) == 1, "one generate call per generation batch"
            assert rec["processor_temperatures"][0] == pytest.approx(expected, abs=1e-6)
            assert rec["output_temperatures"] == pytest.approx(expected, abs=1e-6)
    logged = [entry for entry in ranks[0]["log_history"] if "ladder/t_min" in entry]
    ends = [
        end
        for step in range(run.MAX_STEPS)
        for end in (_expected_ladder(step, run.MAX_STEPS)[0], _expected_ladder(step, run.MAX_STEPS)[-1])
    ]
    assert [end for e in logged for end in (e["ladder/t_min"], e["ladder/t_max"])] == pytest.approx(ends)


def test_loss_scores_each_row_at_its_sampling_temperature(ranks):
    for rank in ranks:
        generated = collections.Counter(
            (tuple(seq), round(t, 6))
            for rec in rank["records"]
            for seq, t in zip(rec["sequences"], rec["output_temperatures"])
        )
        scored = collections.Counter((tuple(seq), round(t, 6)) for seq, t in rank["loss_rows"])
        assert scored == generated


def test_advantages_equal_one_process_estimate_on_the_global_rewards(ranks):
    for batch in _steps(ranks):
        gathered = [torch.tensor(rec["rewards_per_func"], dtype=torch.float32) for rec in batch]
        for other in gathered[1:]:  # every process holds the same global reward matrix
            torch.testing.assert_close(other, gathered[0], atol=0, rtol=0, equal_nan=True)
        rewards_per_func = gathered[0]
        assert rewards_per_func.shape == (NUM_PROCESSES * ROWS, len(run.WEIGHTS))
        names = batch[0]["reward_func_names"]
        assert names == list(run.WEIGHTS)
        weights = torch.tensor(batch[0]["reward_weights"])
        assert weights.tolist() == pytest.approx(list(run.WEIGHTS.values()))

        trained = torch.tensor([a for rec in batch for a in rec["advantages"]])
        expected = estimate_advantages(rewards_per_func, weights, K, "rank")
        torch.testing.assert_close(trained, expected, atol=1e-6, rtol=0)
        # The same, written out: weighted sum of the scored objectives (skipped ones are NaN), rank within groups.
        weighted_sum = (rewards_per_func * weights).nansum(1)
        torch.testing.assert_close(trained, rank_advantages(weighted_sum, K), atol=1e-6, rtol=0)
        assert trained.abs().sum() > 0


def test_group_objectives_equal_one_process_computation_on_the_global_batch(ranks):
    ngram = run.CONFIG["novelty_ngram"]
    straddling_values = set()
    for batch in _steps(ranks):
        prompts = [p for rec in batch for p in rec["prompts"]]
        completions = [c for rec in batch for c in rec["completions"]]
        columns = dict(zip(batch[0]["reward_func_names"], zip(*batch[0]["rewards_per_func"])))
        assert list(columns["digits"]) == pytest.approx(digit_reward(completions), abs=1e-6)  # the order is global
        expected = novelty(None, completions, num_generations=K, novelty_ngram=ngram)
        assert list(columns["novelty"]) == pytest.approx(expected, abs=1e-6)
        expected = run.prompt_novelty(prompts, completions, num_generations=K, novelty_ngram=ngram)
        assert list(columns["prompt_novelty"]) == pytest.approx(expected, abs=1e-6)
        straddling_values.update(columns["prompt_novelty"][K : 2 * K])
    assert len(straddling_values) > 1, "the straddling group's novelty is constant: the check would be vacuous"


def test_skipped_rewards_match_one_process_and_are_counted(ranks):
    """reward_error_policy='skip': the same global rows get None, and `rewards/flaky/errors` counts them."""
    logged = [e["rewards/flaky/errors"] for e in ranks[0]["log_history"] if "rewards/flaky/errors" in e]
    expected_counts = []
    for batch in _steps(ranks):
        completions = [c for rec in batch for c in rec["completions"]]
        column = dict(zip(batch[0]["reward_func_names"], zip(*batch[0]["rewards_per_func"])))["flaky"]
        skipped = [math.isnan(r) for r in column]
        assert skipped == [math.isnan(r) for r in run.flaky(completions)]
        expected_counts.append(sum(skipped))
    assert any(expected_counts), "no completion was skipped: the check would be vacuous"
    # The documented meaning: the number of completions affected in the (global) generation batch.
    assert logged == pytest.approx(expected_counts), f"logged {logged}, affected {expected_counts}"


def test_group_objective_failures_are_checked_on_the_global_result(tmp_path_factory):
    """A group objective's short result or NaN at a global row: every process raises, or all skip the same rows."""
    from tests.dist import group_guard as guard

    outcomes = _torchrun(tmp_path_factory, "tests/dist/group_guard.py", "guard")
    n = NUM_PROCESSES * guard.PER_DEVICE_ROWS
    for name in ("short", "nan"):
        errors = [outcome[f"raise/{name}"].get("error") for outcome in outcomes]
        assert all(e is not None and "ObjectiveError" in e and repr(name) in e for e in errors), (name, errors)
    # "skip", as in one process: a short result skips every row of the batch, a NaN skips its global row only.
    expected = {"short": [None] * n, "nan": [None if i == guard.NAN_INDEX else 1.0 for i in range(n)]}
    for name, rows in expected.items():
        got = [r for outcome in outcomes for r in outcome[f"skip/{name}"]["rewards"]]
        assert got == rows, (name, got)
        # The trainer multiplies each process's count by the number of processes and TRL averages over processes,
        # so the logged value is the sum of what the processes report: it must be the global count.
        reported = [
            v for outcome in outcomes for key, v in outcome[f"skip/{name}"]["logged"] if key.endswith("errors")
        ]
        assert sum(reported) == rows.count(None), (name, reported)
