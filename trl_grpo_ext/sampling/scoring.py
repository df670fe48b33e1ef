r"""Scoring each row at its own temperature through TRL's fused LM head, by scaling the last hidden state."""

from __future__ import annotations

import torch

_NONLINEAR_HEAD_ATTRIBUTES = ("final_logit_softcapping",)


def check_exact_temperature_scoring(model: torch.nn.Module) -> None:
    r"""Raise unless scaling the last hidden state scores each row exactly at its own temperature.

    TRL's fused LM head computes log_softmax(s * (W h + b) / T_base), s a constant logit scale (`logit_scale`,
    `output_multiplier`, `lm_head_multiplier` or 1 / `logits_scaling`), softcapped first when the config sets
    `final_logit_softcapping`. Feeding it h * T_base / T_j gives log_softmax(s * W h / T_j), the log-probs at T_j,
    if and only if the head is linear: no bias b (b would not be scaled) and no soft-cap (tanh is not linear).

    Args:
        model (`torch.nn.Module`):
            A causal LM (`PreTrainedModel`, possibly wrapped by PEFT).

    Raises:
        `ValueError`: naming the architecture and the reason.

    Example:
    >>> from trl_grpo_ext.kit.tiny import build_tiny_model
    >>> check_exact_temperature_scoring(build_tiny_model())  # Qwen2: bias-free linear head, no soft-cap
    """
    config = model.config.get_text_config()
    architecture = f"{type(model).__name__} (model_type={getattr(config, 'model_type', None)!r})"
    advice = "Set `ladder_logprob_temperature='base'` or use a constant `temperature_schedule`."
    head = model.get_output_embeddings()
    if head is None or getattr(head, "weight", None) is None:
        raise ValueError(f"{architecture}: no linear output embedding (lm_head) to score through. {advice}")
    if getattr(head, "bias", None) is not None:
        raise ValueError(
            f"{architecture}: lm_head has a bias, so scaling the hidden state does not scale the logits. {advice}"
        )
    for name in _NONLINEAR_HEAD_ATTRIBUTES:
        value = getattr(config, name, None)
        if value is not None:
            raise ValueError(f"{architecture}: {name}={value} is not linear in the logits. {advice}")


def scale_hidden_states(hidden: torch.Tensor, row_scale: torch.Tensor) -> torch.Tensor:
    r"""Scale row j of the last hidden state by row_scale_j = T_base / T_j, so that the head scores it at T_j.

    h'_j = h_j * T_base / T_j, hence log_softmax(W h'_j / T_base) = log_softmax(W h_j / T_j) for a bias-free linear head
    (`check_exact_temperature_scoring`). The product is computed in the promoted dtype and cast back to `hidden.dtype`
    (one rounding in bfloat16/float16).

    Args:
        hidden (`torch.Tensor` of shape `(B, T, H)`):
            Last hidden state of the backbone.
        row_scale (`torch.Tensor` of shape `(B,)`):
            T_base / T_j for each row.

    Returns:
        `torch.Tensor` of the shape and dtype of `hidden`.

    Example:
    >>> scale_hidden_states(torch.ones(2, 1, 2), torch.tensor([2.0, 0.5]))
    tensor([[[2.0000, 2.0000]],
    <BLANKLINE>
            [[0.5000, 0.5000]]])
    """
    if row_scale.shape != hidden.shape[:1]:
        raise ValueError(
            f"`row_scale` must have shape ({hidden.shape[0]},), one scale per row of `hidden`, got {tuple(row_scale.shape)}."
        )
    row_scale = row_scale.to(hidden.device).view(-1, *([1] * (hidden.dim() - 1)))
    return (hidden * row_scale).to(hidden.dtype)
