"""The settings of `OnlineRewardModel`, written once: default, check and documentation of each, in one dataclass.

`OnlineRewardModel(model, tokenizer, labeler, **settings)` takes these as keyword arguments (its signature and the
`Args` of its docstring are made from this class), the `online_reward_model` block of a config takes them as keys
(`OnlineRewardModelConfig`, a subclass), and a checkpoint records the ones marked `recorded` (a resumed run that
changes one of them warns).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..checks import Choice, Integer, Number, SubConfig, describe_settings, setting
from .bradley_terry import SELECTORS
from .guard import REWARD_ERROR_POLICIES
from .online_checkpoint import STATE_DIR

__all__ = [
    "MAX_SIZE",
    "OnlineRewardModelSettings",
    "check_device",
    "check_name",
    "check_seed_pairs",
    "seed_pairs_as_labelled",
]

_NAME = re.compile(r"[A-Za-z0-9_-]+")
# The cap of the buffer and held-out capacities and of `max_length`: far above any label budget or context, and below
# what a deque's `maxlen` or a tokenizer's length holds (larger values overflow when the model is built or called).
MAX_SIZE = 10**7


def check_name(name: Any, field: str = "name") -> str:
    """The objective's name: its metrics' prefix and its checkpoint folder `online_rm/{name}`, so a plain folder name.

    Example:
    ```python
    >>> check_name("prefs-2")
    'prefs-2'
    >>> check_name("..")
    Traceback (most recent call last):
    ...
    ValueError: `name` must be 1 or more ASCII letters, digits, '_' or '-' (it names the metrics and the checkpoint folder online_rm/<name>), got '..'.

    ```
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"`{field}` must be 1 or more ASCII letters, digits, '_' or '-' (it names the metrics and the checkpoint "
            f"folder {STATE_DIR}/<name>), got {name!r}."
        )
    return name


def check_device(device: Any, field: str = "device", names_only: bool = False):
    """A torch device (or None), parsed, not looked up: `"cuda:1"` passes on a machine without it. `names_only`: a
    device name, not a `torch.device` (a config is plain data).

    Example:
    ```python
    >>> check_device("cpu")
    device(type='cpu')
    >>> check_device("gpu-please")
    Traceback (most recent call last):
    ...
    ValueError: `device` must be a torch device such as 'cpu', 'cuda' or 'cuda:0', got 'gpu-please'.

    ```
    """
    import torch

    if device is None or (isinstance(device, torch.device) and not names_only):
        return device
    if isinstance(device, str):
        try:
            return torch.device(device)
        except (RuntimeError, ValueError):
            pass
    raise ValueError(f"`{field}` must be a torch device such as 'cpu', 'cuda' or 'cuda:0', got {device!r}.")


def seed_pairs_as_labelled(seed_pairs: Any, field: str = "seed_pairs") -> list[dict[str, Any]]:
    """Seed pairs `{prompt, chosen, rejected[, margin]}`, validated, as labelled pairs `{prompt, a, b, label, margin}`.

    Example:
    ```python
    >>> seed_pairs_as_labelled([{"prompt": "1+2=", "chosen": "3", "rejected": "x"}])
    [{'prompt': '1+2=', 'a': '3', 'b': 'x', 'label': 1.0, 'margin': 0.0}]

    ```
    """
    if seed_pairs is None:
        return []
    if isinstance(seed_pairs, (str, Mapping)) or not isinstance(seed_pairs, Sequence):
        raise ValueError(f"`{field}` must be a list of {{prompt, chosen, rejected}} dicts, got {seed_pairs!r}.")
    out = []
    for index, pair in enumerate(seed_pairs):
        if not isinstance(pair, Mapping) or not {"prompt", "chosen", "rejected"} <= set(pair):
            raise ValueError(
                f"`{field}[{index}]` must be a dict with the keys 'prompt', 'chosen', 'rejected' (and optionally "
                f"'margin'), got {pair!r}."
            )
        margin = Number(0)(pair.get("margin", 0.0), f"{field}[{index}].margin")
        out.append(
            {"prompt": pair["prompt"], "a": pair["chosen"], "b": pair["rejected"], "label": 1.0, "margin": margin}
        )
    return out


def check_seed_pairs(seed_pairs: Any, field: str = "seed_pairs") -> Any:
    """Seed pairs, validated (`seed_pairs_as_labelled`) and kept as given."""
    seed_pairs_as_labelled(seed_pairs, field)
    return seed_pairs


@dataclass(kw_only=True)
class OnlineRewardModelSettings(SubConfig):
    """The settings of `OnlineRewardModel` (what each does: its docstring, made from the `help` of these fields)."""

    name: str = setting(
        "rm",
        check_name,
        help="The objective's name (`__name__`), its metrics' prefix (`rm/loss`, ...) and its checkpoint directory "
        "(`online_rm/rm`): ASCII letters, digits, `_` and `-`. A resumed run must keep it.",
    )
    update_every: int = setting(
        1, Integer(0), recorded=True, help="Learn every this many reward calls (generation batches); 0 never."
    )
    label_budget: int | None = setting(
        None,
        Integer(0, optional=True),
        recorded=True,
        help="Total labels (answered pairs, ties included) the run may spend; then the model freezes. None: no limit.",
    )
    pairs_per_update: int = setting(8, Integer(1), recorded=True, help="Pairs sent to the labeler per update.")
    selector: str | Callable = setting(
        "random",
        Choice(sorted(SELECTORS), or_callable=True),
        help="`'random'` (seeded, within groups), `'uncertain'` (BT probability closest to 0.5), or a callable "
        "`(pairs, k, scores, rng) -> pairs`.",
    )
    buffer_size: int = setting(
        1024,
        Integer(1, maximum=MAX_SIZE),
        recorded=True,
        help="Capacity of the FIFO replay buffer of labelled training pairs (at most `MAX_SIZE`, 10**7).",
    )
    replay_pairs: int | None = setting(
        None,
        Integer(0, optional=True),
        recorded=True,
        help="Buffer pairs trained on with each update's new pairs; defaults to `pairs_per_update`.",
    )
    heldout_fraction: float = setting(
        0.2,
        Number(0, below=1),
        recorded=True,
        help="Fraction of each round's labels kept out of training for `rm/pair_accuracy`, in [0, 1).",
    )
    heldout_size: int = setting(
        256,
        Integer(1, maximum=MAX_SIZE),
        recorded=True,
        help="Capacity of the FIFO held-out set (at most 10**7).",
    )
    seed_pairs: Sequence[Mapping[str, Any]] | None = setting(
        None,
        check_seed_pairs,
        help="Labelled pairs `{prompt, chosen, rejected[, margin]}` trained on before the first step (free of budget).",
    )
    seed_epochs: int = setting(1, Integer(0), help="Passes over `seed_pairs`, in minibatches of `pairs_per_update`.")
    update_steps: int = setting(
        1, Integer(1), recorded=True, help="Optimizer steps per update, each on all of the update's pairs."
    )
    # AdamW moves every weight by up to about `learning_rate` a step: above 1 one update can wreck the model.
    learning_rate: float = setting(
        1e-5,
        Number(0, strict=True, maximum=1),
        recorded=True,
        help="AdamW learning rate, in (0, 1]. A step whose loss or gradients are not finite is not applied (the error "
        "policy: `raise` stops, `skip` warns once and logs `{name}/skipped_steps` at such an update).",
    )
    weight_decay: float = setting(0.0, Number(0), recorded=True, help="AdamW weight decay (>= 0).")
    margin: float = setting(0.0, Number(0), recorded=True, help="Margin m of the loss for the labelled pairs (>= 0).")
    max_grad_norm: float | None = setting(
        1.0, Number(0, strict=True, optional=True), help="Gradient clipping norm (> 0), or None."
    )
    batch_size: int = setting(32, Integer(1), help="Texts per scoring forward.")
    max_length: int | None = setting(
        None,
        Integer(1, maximum=MAX_SIZE, optional=True),
        help="Keep at most this many tokens of a text (truncated on the right), at most 10**7.",
    )
    num_generations: int | None = setting(
        None,
        Integer(1, optional=True),
        key=False,
        help="The group size, for plain `trl.GRPOTrainer`; GRPOExtTrainer passes it on every call.",
    )
    error_policy: str | None = setting(
        None,
        Choice(REWARD_ERROR_POLICIES, optional=True),
        help="`'raise'` or `'skip'` for labeler faults; defaults to the trainer's `reward_error_policy` (else raise).",
    )
    seed: int = setting(0, Integer(0), recorded=True, help="Seed of the pair selection and the held-out split.")
    device: str | None = setting(
        None,
        check_device,
        help="Where the reward model runs (a torch device name, checked when constructed); defaults to the "
        "trainer's device (else the model's).",
    )

    @classmethod
    def recorded(cls) -> tuple[str, ...]:
        """The settings a checkpoint records, in order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("recorded"))


OnlineRewardModelSettings.__doc__ += "\n\n    Args:\n" + describe_settings(OnlineRewardModelSettings) + "\n    "
