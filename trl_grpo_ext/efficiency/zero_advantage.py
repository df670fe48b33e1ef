r"""Rows whose advantage is zero left out of the loss's forward and backward, with TRL's loss unchanged.

With beta = 0, a row whose advantage is 0 has a per-token loss of exactly 0 for every TRL loss type that multiplies
by the advantage (`-min(r A, clip(r) A)`, `-clip(r) A log p`, `-soft(r) A`): its log-probs change nothing but their
own zero. A tied group (every reward equal) is all such rows under any estimator. So the loss's forward runs on the
other rows only, and each skipped row gets a placeholder log-prob equal to its old-policy log-prob (ratio 1), which
TRL's `_compute_loss` turns into the same 0; its normaliser (token counts, `num_items_in_batch`) never reads log-probs.

Exact only when nothing else reads those rows' log-probs or entropies: the KL term (beta), the entropy bonus, the
high-entropy token mask and a MoE auxiliary loss do, and `GRPOExtConfig` refuses them with this option.
"""

from __future__ import annotations

import torch


def rows_with_signal(advantages: torch.Tensor) -> torch.Tensor:
    """Which rows the loss must compute: those with a non-zero advantage, and at least one row.

    The one row kept in an all-zero micro-batch keeps the backward connected to every trainable parameter (its
    gradient is exactly 0), so that a process whose rows are all skipped still joins DDP's gradient all-reduce.

    Example:
    ```python
    >>> rows_with_signal(torch.tensor([0.0, 1.5, 0.0, -1.5])).tolist()
    [False, True, False, True]
    >>> rows_with_signal(torch.tensor([0.0, 0.0])).tolist()
    [True, False]
    ```
    """
    keep = advantages != 0
    if keep.dim() > 1:  # per-token advantages (B, T)
        keep = keep.any(dim=-1)
    if not keep.any():
        keep = keep.clone()
        keep[0] = True
    return keep


def fill_rows(computed: torch.Tensor, keep: torch.Tensor, placeholder: torch.Tensor) -> torch.Tensor:
    """The full batch: `computed` at the kept rows (gradient flows to it), `placeholder` (no gradient) elsewhere.

    Example:
    ```python
    >>> fill_rows(torch.tensor([[1.0], [2.0]]), torch.tensor([True, False, True]), torch.zeros(3, 1)).tolist()
    [[1.0], [0.0], [2.0]]
    ```
    """
    rows = keep.nonzero().squeeze(1)
    return placeholder.detach().to(computed.dtype).index_put((rows,), computed)


def skipped_rows_stats(keep: torch.Tensor, mask: torch.Tensor, kept_entropies: torch.Tensor | None) -> torch.Tensor:
    """`[rows skipped, rows, entropy summed over the computed rows' tokens, those tokens]`, to be summed over
    processes: the skipped fraction and TRL's `entropy` metric measured on the rows computed.

    `mask` is the loss mask of the whole micro-batch, `kept_entropies` the per-token entropies of the kept rows.

    Example:
    ```python
    >>> keep = torch.tensor([True, False, True])
    >>> skipped_rows_stats(keep, torch.ones(3, 2), torch.tensor([[1.0, 2.0], [3.0, 4.0]])).tolist()
    [1.0, 3.0, 10.0, 4.0]
    ```
    """
    mask = mask[keep].float()
    entropy = (kept_entropies.detach() * mask).sum() if kept_entropies is not None else mask.new_zeros(())
    rows = torch.tensor([float((~keep).sum()), float(keep.numel())], device=mask.device)
    return torch.cat([rows, torch.stack([entropy, mask.sum()])])
