r"""Each group's prompt computed once: the loss's log-prob forward and `generate`'s prefill, with the same numbers.

A GRPO batch holds every prompt K times, once per completion of its group, and the prompt is most of the tokens
(75 % on the real demo). A causal model's keys and values at the prompt's positions depend only on the prompt, so
they can be computed once per distinct prompt and shared:

    prompt pass      backbone(prompt[:, :P-1])  on the U distinct prompts, use_cache=True -> keys/values (U, P-1)
    expand           cache rows gathered by `inverse` -> (B, P-1)   (backward: the B rows' gradients summed per prompt)
    completion pass  model([prompt[:, P-1], completion], cache=expanded, shift_labels=completion, fused_lm_head=True)

The completion pass starts at the prompt's last token, whose hidden state scores the first completion token, so every
completion token is scored by TRL's own fused LM head (`trl.trainer.utils.add_fused_lm_head`) with TRL's positions
(`arange` over prompt + completion, as the plain forward uses), attention mask and temperature. What differs from
the plain forward is only the order of float32 sums (the attention over U instead of B prompt rows).

In `generate`, the prompts' prefill runs once per distinct prompt with the positions `generate` itself gives a
left-padded row (`cumsum` of the attention mask), and `generate` decodes on top of the expanded cache.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import Any

import torch

from ..sampling.processors import wrapped_generate


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct (prompt, mask) rows of a batch and, for every row, the index of its distinct prompt.

    Returns `(first, inverse)`: `first[u]` is the first row holding distinct prompt u (in order of first appearance),
    `inverse[i]` the distinct prompt of row i, so that `prompt_ids[first][inverse] == prompt_ids`.

    Example:
    ```python
    >>> ids = torch.tensor([[5, 6], [7, 8], [5, 6], [5, 6]])
    >>> first, inverse = prompt_groups(ids, torch.ones_like(ids))
    >>> first.tolist(), inverse.tolist()
    ([0, 1], [0, 1, 0, 0])
    ```
    """
    rows = torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], dim=1)
    _, sorted_inverse = torch.unique(rows, dim=0, return_inverse=True)
    num = int(sorted_inverse.max()) + 1 if sorted_inverse.numel() else 0
    positions = torch.arange(rows.size(0), device=rows.device)
    first = torch.full((num,), rows.size(0), dtype=torch.long, device=rows.device)
    first = first.scatter_reduce(0, sorted_inverse, positions, reduce="amin")
    order = torch.argsort(first)  # number the distinct prompts by first appearance
    rank = torch.empty_like(order)
    rank[order] = torch.arange(num, device=rows.device)
    return first[order], rank[sorted_inverse]


def prompt_positions_saved(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
    """`[prompt positions not computed again, prompt positions of the rows]` of one micro-batch under `share_prompt`.

    Each repeat of a distinct prompt saves its positions but the last (which runs with its completion).

    Example:
    ```python
    >>> ids = torch.tensor([[5, 6, 7], [5, 6, 7], [5, 6, 7], [8, 9, 1]])
    >>> prompt_positions_saved(ids, torch.ones_like(ids)).tolist()
    [4.0, 12.0]
    ```
    """
    rows, length = prompt_ids.shape
    distinct = len(prompt_groups(prompt_ids[:, :-1], prompt_mask[:, :-1])[0]) if length > 1 else rows
    return torch.tensor([float((rows - distinct) * max(length - 1, 0)), float(rows * length)])


def backbone_of(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack (e.g. `Qwen2Model`) under a causal LM, a PEFT wrapper or a DDP wrapper.

    PEFT's LoRA layers live inside it, so a call to it runs the adapter (or not, under `disable_adapter()`).
    """
    model = getattr(model, "module", model)  # DistributedDataParallel
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.base_model


def cache_keyword(backbone: torch.nn.Module) -> str | None:
    """The name under which `backbone.forward` takes a key/value cache: `cache` (transformers >= 5.2x), the older
    `past_key_values`, or None when it takes none (the model cannot share a prompt this way)."""
    parameters = inspect.signature(backbone.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def prefix_cache(backbone: torch.nn.Module, **inputs) -> Any:
    """Run `backbone` with `use_cache=True` and return the key/value cache it filled."""
    keyword = cache_keyword(backbone)
    return getattr(backbone(**inputs, use_cache=True), keyword)


def shared_prompt_log_probs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    compute_entropy: bool = False,
    batch_size: int | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    prompt_pass: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    plain: Callable[..., tuple[torch.Tensor, torch.Tensor | None, Any]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, None]:
    """Per-token log-probs (and entropies) of the completions, each distinct prompt of a chunk computed once.

    The contract of TRL's `GRPOTrainer._get_per_token_logps_and_entropies` for a text-only batch: `input_ids` is
    prompt + completion, the last `logits_to_keep` positions the completion; rows are processed in chunks of
    `batch_size`. `model` must carry TRL's fused LM head. A chunk with no repeated prompt (or a prompt of one token)
    is handed to `plain(model, input_ids, attention_mask, logits_to_keep, compute_entropy=...)`, TRL's own forward.
    `prompt_pass` is entered around the prompt pass (the trainer pauses its per-row backbone hook there).
    """
    batch_size = batch_size or input_ids.size(0)
    prompt_length = input_ids.size(1) - logits_to_keep
    all_logps, all_entropies = [], []
    for start in range(0, input_ids.size(0), batch_size):
        ids, mask = input_ids[start : start + batch_size], attention_mask[start : start + batch_size]
        first, inverse = prompt_groups(ids[:, : prompt_length - 1], mask[:, : prompt_length - 1])
        if prompt_length < 2 or len(first) == ids.size(0):
            logps, entropies, _ = plain(model, ids, mask, logits_to_keep, compute_entropy=compute_entropy)
        else:
            logps, entropies = _shared_chunk(model, ids, mask, prompt_length, first, inverse, autocast, prompt_pass)
        all_logps.append(logps)
        all_entropies.append(entropies)
    entropies = torch.cat(all_entropies, dim=0) if compute_entropy else None
    return torch.cat(all_logps, dim=0), entropies, None


def _shared_chunk(model, ids, mask, prompt_length, first, inverse, autocast, prompt_pass):
    cached = prompt_length - 1  # the prompt's last token runs with its completion: it scores the first token
    backbone = backbone_of(model)
    with autocast(), prompt_pass():
        cache = prefix_cache(backbone, input_ids=ids[first, :cached], attention_mask=mask[first, :cached])
    cache.batch_select_indices(inverse)  # (U, ...) -> (B, ...); autograd sums the B rows back per prompt
    completion = ids[:, prompt_length:]
    labels = completion.masked_fill(mask[:, prompt_length:] == 0, -100)
    shift_labels = torch.cat([labels, labels.new_full((labels.size(0), 1), -100)], dim=1)
    with autocast():
        outputs = model(
            input_ids=ids[:, cached:],
            attention_mask=mask,
            shift_labels=shift_labels,
            **{cache_keyword(backbone): cache},
            fused_lm_head=True,
        )
    entropy = outputs.entropy[:, :-1] if outputs.entropy is not None else None
    return outputs.log_probs[:, :-1], entropy


def shared_prefill_generation(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """Within the block, `model.generate(input_ids, attention_mask, ...)` prefills each distinct prompt once.

    The prompt minus its last token runs once per distinct prompt, with the positions `generate` gives a left-padded
    row; its cache is expanded to the rows and `generate` continues from it (the last prompt token, then decoding as
    before). Other calls (a cache given, no repeated prompt) go through unchanged.
    """
    keyword = cache_keyword(backbone_of(model))

    def wrap(original_generate):
        def generate(*args, input_ids=None, attention_mask=None, **kwargs):
            if args or input_ids is None or attention_mask is None or kwargs.get(keyword) is not None:
                return original_generate(*args, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            cached = input_ids.size(1) - 1
            first, inverse = prompt_groups(input_ids[:, :cached], attention_mask[:, :cached])
            if cached < 1 or len(first) == input_ids.size(0):
                return original_generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            prefix_mask = attention_mask[first, :cached]
            positions = (prefix_mask.long().cumsum(-1) - 1).masked_fill(prefix_mask == 0, 0)  # as `generate` does
            with torch.no_grad():
                cache = prefix_cache(
                    backbone_of(model),
                    input_ids=input_ids[first, :cached],
                    attention_mask=prefix_mask,
                    position_ids=positions,
                )
            cache.batch_select_indices(inverse)
            return original_generate(input_ids=input_ids, attention_mask=attention_mask, **{keyword: cache}, **kwargs)

        return generate

    return wrapped_generate(model, wrap)
