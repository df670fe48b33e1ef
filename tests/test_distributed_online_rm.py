"""Two CPU processes (torchrun, gloo) train the online reward model like one process on the same global batches.

`tests/dist/record_online_rm.py` trains 3 GRPO steps with `learned_preference` from the config, 6 rows per process
in groups of 4 (a group straddles the processes), a gold labeler that fails on some completions (`skip`). Here, in
one process, the same objective built from the same config is called on the global batches the run scored: its
weights, counters and rm/* metrics must equal the run's, on both processes, with the labels asked once (process 0).
After training, a labeler that raises: under `raise` both processes raise, under `skip` both count the same errors.
"""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tests.dist import record_online_rm as run
from tests.helpers import last_logged, run_torchrun
from trl_grpo_ext.kit import resolve_model_path
from trl_grpo_ext.rewards import online_reward_model_from_config

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

NUM_PROCESSES = 2
RM_KEYS = ("rm/loss", "rm/pair_accuracy", "rm/gold_agreement", "rm/labels_used", "rm/budget_left", "rm/label_errors")


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "tiny-cache"  # conftest's per-session cache
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRL_GRPO_EXT_CACHE", str(cache))
        model_path = resolve_model_path("tiny:tiny")  # materialised once, here, not by two racing processes
    output_dir = tmp_path_factory.mktemp("distributed-online-rm")
    run_torchrun(
        "tests/dist/record_online_rm.py",
        output_dir,
        model_path,
        nproc=NUM_PROCESSES,
        env={"TRL_GRPO_EXT_CACHE": str(cache)},
    )
    ranks = [json.loads((output_dir / f"rank{rank}.json").read_text()) for rank in range(NUM_PROCESSES)]
    return output_dir, ranks


@pytest.fixture(scope="module")
def replay(record):
    """One process, the same objective from the same config, called on the run's global batches."""
    _, ranks = record
    rm = online_reward_model_from_config(run.ONLINE_REWARD_MODEL)
    logged = []
    for batch in ranks[0]["scored"]:
        metrics = {}
        rm(batch["prompts"], batch["completions"], num_generations=run.NUM_GENERATIONS, log_metric=metrics.__setitem__)
        logged.append(metrics)
    return rm, logged


def test_every_process_scored_the_same_global_batches(record):
    _, ranks = record
    assert [r["num_processes"] for r in ranks] == [NUM_PROCESSES] * NUM_PROCESSES
    scored = ranks[0]["scored"]
    assert len(scored) == run.MAX_STEPS
    assert all(len(b["completions"]) == NUM_PROCESSES * run.PER_DEVICE_BATCH for b in scored)
    assert ranks[1]["scored"] == scored


def test_labels_are_asked_once_on_the_main_process(record, replay):
    _, ranks = record
    rm, _ = replay
    assert ranks[1]["gold_calls"] == []  # process 1 never asks the labeler
    assert ranks[0]["gold_calls"] == run.GOLD_CALLS  # = the one-process replay's calls (both sides of each pair)
    assert sum(ranks[0]["gold_calls"]) > 0
    assert ranks[0]["labels_used"] == ranks[1]["labels_used"] == rm.labels_used


def test_both_processes_hold_the_weights_of_one_process(record, replay):
    output_dir, _ = record
    rm, _ = replay
    expected = {k: v.detach().cpu() for k, v in rm.model.state_dict().items()}
    initial = online_reward_model_from_config(run.ONLINE_REWARD_MODEL).model.state_dict()
    assert max((expected[k] - initial[k]).abs().max().item() for k in expected) > 1e-4  # it learnt
    for rank in range(NUM_PROCESSES):
        weights = load_file(str(output_dir / f"rank{rank}" / "model.safetensors"))
        for key, value in expected.items():
            torch.testing.assert_close(weights[key], value, atol=1e-6, rtol=1e-5)
        state = json.loads((output_dir / f"rank{rank}" / "state.json").read_text())
        assert state["buffer"] == rm.buffer and state["heldout"] == rm.heldout
        assert state["counters"] == {**rm._counters}


def test_rm_metrics_equal_one_process_and_errors_are_not_multiplied(record, replay):
    _, ranks = record
    _, logged = replay
    history = ranks[0]["log_history"]
    steps = [e for e in history if "rm/labels_used" in e]
    assert len(steps) == run.MAX_STEPS
    for entry, expected in zip(steps, logged):
        actual = {k: entry[k] for k in RM_KEYS if k in entry}
        assert actual.keys() == expected.keys()
        assert actual == pytest.approx(expected, abs=1e-5)
    errors = last_logged(history, "rm/label_errors")
    assert sum(errors) >= 1 and all(float(e).is_integer() for e in errors)  # a global count, not a mean or a sum
    used, left = last_logged(history, "rm/labels_used"), last_logged(history, "rm/budget_left")
    assert [u + b for u, b in zip(used, left)] == [run.ONLINE_REWARD_MODEL["label_budget"]] * run.MAX_STEPS  # once
    assert used == sorted(used) and used[-1] > used[0]
    assert not any(math.isnan(v) for e in steps for k, v in e.items() if k in RM_KEYS)


def test_a_labeler_error_on_process_0_is_raised_on_every_process(record):
    _, ranks = record
    faults = [r["faults"] for r in ranks]
    assert faults[0]["calls"] == [run.ONLINE_REWARD_MODEL["pairs_per_update"]] * 2 and faults[1]["calls"] == []
    assert faults[0]["raise"]["error"].startswith("ObjectiveError: Objective 'rm': labeler")
    assert "RuntimeError: labeler down" in faults[0]["raise"]["error"]
    assert faults[1]["raise"]["error"].startswith("ObjectiveError: ObjectiveError on process 0: Objective 'rm'")
    for fault in faults:  # skip: the same count on both, the pairs dropped
        assert fault["skip"]["logged"]["rm/label_errors"] == run.ONLINE_REWARD_MODEL["pairs_per_update"]
