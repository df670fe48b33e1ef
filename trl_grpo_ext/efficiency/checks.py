"""What the config cannot see about `share_prompt` / `skip_zero_advantage`: the model the trainer built."""

from __future__ import annotations

from .shared_prompt import backbone_of, cache_keyword


def check_efficiency_options(args, trainer) -> None:
    """Refuse the options where the model makes them inexact: multimodal inputs, a MoE auxiliary loss, FSDP version 1
    (`share_prompt`), a backbone without a key/value cache argument (`share_prompt`). `trainer` is the built
    `GRPOTrainer` (its `_is_vlm`, `aux_loss_enabled`, `accelerator`, `model`)."""
    if not (args.share_prompt or args.skip_zero_advantage):
        return
    field_name = "share_prompt" if args.share_prompt else "skip_zero_advantage"
    if trainer._is_vlm:
        raise ValueError(
            f"`{field_name}=True` serves text-only models; {type(trainer.model).__name__} takes multimodal inputs, "
            "whose rows cannot be regrouped. Leave it off for this model."
        )
    if trainer.aux_loss_enabled:
        raise ValueError(
            f"`{field_name}=True` cannot be combined with a MoE auxiliary loss (`router_aux_loss_coef` "
            f"{trainer.router_aux_loss_coef}): it is computed over every row's tokens, prompt included. Set "
            "router_aux_loss_coef=0 or leave the option off."
        )
    fsdp_plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if args.share_prompt and trainer.is_fsdp_enabled and getattr(fsdp_plugin, "fsdp_version", 1) == 1:
        raise ValueError(
            "`share_prompt=True` runs each shared prompt through the backbone outside the model's root forward, "
            "whose parameters FSDP version 1 does not gather there. Use FSDP2 (`fsdp_version: 2`, tested) or DDP, "
            "or leave share_prompt off."
        )
    if args.share_prompt:
        backbone = backbone_of(trainer.accelerator.unwrap_model(trainer.model))
        if cache_keyword(backbone) is None:
            raise ValueError(
                f"`share_prompt=True` passes the shared prompt as a key/value cache, and "
                f"{type(backbone).__name__}.forward takes no `cache` argument. Leave share_prompt off."
            )
