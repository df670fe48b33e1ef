r"""Sampling a ladder with transformers `generate`: a logits processor that divides each row by its temperature."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList


class RowTemperatureLogitsProcessor(LogitsProcessor):
    r"""Divide the next-token scores of row j by its own temperature T_j: scores'_j = scores_j / T_j.

    Row by row this is transformers' `TemperatureLogitsWarper(T_j)`: the same IEEE float32 division, so on CPU the
    result is bit-identical (tested). On CUDA, PyTorch computes the warper's `tensor / python_float` as a
    multiplication by the float32 reciprocal ("may lose one bit of precision", in its kernel), while dividing by a
    tensor of temperatures is a true division: the two can differ in the last bit of a logit there.

    Use it with `model.generate(..., do_sample=True, temperature=1.0, logits_processor=LogitsProcessorList([proc]))`.
    In transformers 5.23, `GenerationMixin._get_logits_processor` builds the non-sampling processors (repetition
    penalty, ...), then merges the custom `logits_processor` list after them, and only then appends the sampling
    warpers: `TemperatureLogitsWarper` (only when `temperature != 1.0`), `TopKLogitsWarper`, `TopPLogitsWarper`,
    `MinPLogitsWarper`, ... So with `temperature=1.0` the sampling pipeline is "divide by T_j, then top-k / top-p /
    min-p", the same as `generate(temperature=T_j)` for each row alone, with no second temperature warper. `_sample`
    hands the processors float32 scores; other dtypes are divided in float32 and cast back.

    Args:
        temperatures (`torch.Tensor` or `Sequence[float]`):
            One temperature per row of the generation batch (`row_temperatures`), each finite and > 0.

    Example:
    >>> proc = RowTemperatureLogitsProcessor([0.5, 2.0])
    >>> proc(None, torch.tensor([[1.0, -1.0], [1.0, -1.0]]))
    tensor([[ 2.0000, -2.0000],
            [ 0.5000, -0.5000]])
    """

    def __init__(self, temperatures: torch.Tensor | Sequence[float]):
        temperatures = torch.as_tensor(temperatures, dtype=torch.float32).detach().cpu()
        if temperatures.dim() != 1 or temperatures.numel() == 0:
            raise ValueError(
                f"`temperatures` must be a non-empty 1-D sequence, got shape {tuple(temperatures.shape)}."
            )
        if not bool(torch.isfinite(temperatures).all() and (temperatures > 0).all()):
            raise ValueError(f"`temperatures` must all be finite and > 0, got {temperatures.tolist()}.")
        self.temperatures = temperatures
        # Copied to the scores' device once, not on every generated token.
        self._on_device: dict[torch.device, torch.Tensor] = {}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.temperatures):
            raise ValueError(
                f"RowTemperatureLogitsProcessor holds {len(self.temperatures)} row temperatures but got scores for "
                f"{scores.shape[0]} rows. Pass one temperature per row of `input_ids` and generate with "
                "num_return_sequences=1 (repeat the prompts instead) and num_beams=1."
            )
        if scores.device not in self._on_device:
            self._on_device[scores.device] = self.temperatures.to(scores.device)[:, None]
        return (scores / self._on_device[scores.device]).to(scores.dtype)


# Of the config attributes TRL's fused LM head reads (`trl.trainer.utils.add_fused_lm_head`), `logit_scale`,
# `output_multiplier`, `lm_head_multiplier` and `logits_scaling` multiply the logits by a constant, which commutes with
# scaling the hidden state; a soft-cap, c * tanh(z / c), does not.


@contextlib.contextmanager
def wrapped_generate(model: torch.nn.Module, wrap: Callable[[Callable], Callable]) -> Iterator[None]:
    """Within the block, `model.generate` is `wrap(model.generate)`; after it, what was there before.

    A `generate` that other code set on the instance is put back; otherwise the instance attribute is dropped and the
    class method shows through again. Blocks nest (the ladder's processor around the shared prefill).
    """
    instance_generate = vars(model).get("generate")
    model.generate = wrap(model.generate)
    try:
        yield
    finally:
        if instance_generate is not None:
            model.generate = instance_generate
        else:
            del model.generate


@contextlib.contextmanager
def row_temperature_generation(owner, model, temperatures: torch.Tensor) -> Iterator[None]:
    """Sample row i at `temperatures[i]` in the one `generate` call TRL makes.

    `owner` is the trainer, whose `generation_config` and `generation_kwargs` TRL passes to `model.generate`: both get
    temperature 1.0 for the call (so transformers adds no scalar temperature warper), and `generate` gets a
    `RowTemperatureLogitsProcessor`, which transformers applies before top-k / top-p / min-p. Both are restored after.
    """
    saved_config, saved_kwargs = owner.generation_config, owner.generation_kwargs
    owner.generation_config = copy.deepcopy(saved_config)
    owner.generation_config.temperature = 1.0
    owner.generation_kwargs = {**saved_kwargs, "temperature": 1.0}
    processor = RowTemperatureLogitsProcessor(temperatures)

    def wrap(original_generate):
        def generate(*args, logits_processor=None, **kwargs):
            processors = LogitsProcessorList([processor, *(logits_processor or [])])
            return original_generate(*args, logits_processor=processors, **kwargs)

        return generate

    try:
        with wrapped_generate(model, wrap):
            yield
    finally:
        owner.generation_config, owner.generation_kwargs = saved_config, saved_kwargs
