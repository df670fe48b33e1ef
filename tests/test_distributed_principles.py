"""Two CPU processes (torchrun, gloo), each with its own local judge: the principle rewards equal what one process
computes for the same completions, and the judge counters add up over the processes."""

import json
from pathlib import Path

import pytest

from tests.dist import record_principles as run
from tests.helpers import run_torchrun
from trl_grpo_ext.kit import resolve_model_path
from trl_grpo_ext.rewards import PrinciplesObjective

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[1]
NUM_PROCESSES = 2


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "tiny-cache"  # conftest's per-session cache
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRL_GRPO_EXT_CACHE", str(cache))
        model_path = resolve_model_path("tiny:tiny")  # materialised once, here, not by two racing processes
    output_dir = tmp_path_factory.mktemp("distributed-principles")
    run_torchrun(
        "tests/dist/record_principles.py",
        output_dir,
        model_path,
        nproc=NUM_PROCESSES,
        env={"TRL_GRPO_EXT_CACHE": str(cache)},
    )
    return json.loads((output_dir / "principles.json").read_text())


def test_rewards_equal_one_process_judging_the_same_completions(record):
    assert record["num_processes"] == NUM_PROCESSES
    rows = NUM_PROCESSES * run.PER_DEVICE_BATCH
    assert len(record["completions"]) == len(record["rewards"]) == rows
    objective = PrinciplesObjective(run.PRINCIPLES, run.JUDGE)
    expected = objective(record["prompts"], record["completions"])
    assert record["rewards"] == pytest.approx(expected, abs=1e-5)


def test_judge_counters_add_up_over_processes(record):
    texts = NUM_PROCESSES * run.PER_DEVICE_BATCH * len(run.PRINCIPLES)  # judged per step, over both processes
    steps = [entry for entry in record["log_history"] if "loss" in entry]
    assert len(steps) == run.MAX_STEPS
    for entry in steps:
        calls, hits = entry["rewards/principles/judge_calls"], entry["rewards/principles/judge_cache_hits"]
        assert calls + hits == texts and calls >= 1
        assert entry["rewards/principles/errors"] == 0.0
