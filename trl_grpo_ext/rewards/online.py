r"""An online reward model: a sequence-classification reward model that keeps learning from pairwise labels.

The objective scores each completion with a reward model $r_\phi(x, y)$ (TRL's convention: one label, the logit of
the last non-padding token of prompt + completion). Every `update_every` calls (generation batches) it picks pairs
$(y_a, y_b)$ *within groups* (two completions of the same prompt: the K = `num_generations` contiguous rows TRL
lays out per prompt), asks a labeler which is better ($y \in \{1, 0.5, 0\}$: a, tie, b), and takes a few AdamW steps
on TRL RewardTrainer's Bradley-Terry loss, with a soft label for ties and an optional margin $m$:

$$\mathcal{L} = -\big[\, y \log \sigma(r_a - r_b - m) + (1 - y) \log \sigma(r_b - r_a - m) \,\big]$$

($y = 1$ is exactly $-\log\sigma(r_w - r_l - m)$.) A batch is scored *before* its labels are learnt, so the rewards
of batch n come from the model trained on the labels of batches < n. Of each round's labels a fraction
(`heldout_fraction`) is kept out of training, and the model's accuracy on those held-out pairs is logged.

Where it runs: inside the reward call, which TRL makes once per generation batch (under its no-grad scoring in parts
of the loop); the update builds fresh tensors under `torch.inference_mode(False)` and `torch.enable_grad()`, with the
reward model's own optimizer. The group size comes from GRPOExtTrainer, which calls group objectives
(`needs_group = True`) on the whole global batch with `num_generations`; every process therefore makes the same
update and the copies stay equal. The labeler is asked on process 0 only and its labels are broadcast
(`_on_main_process`), so a judge endpoint is called once, a label queue has one writer, and a labeler that would
answer twice differently cannot split the copies; the `rm/*` metrics are then the same global value on every
process. With plain `trl.GRPOTrainer`, pass `num_generations` to the constructor (and train on one process).

State: the objective is also a `TrainerCallback` and `ExportableState` (GRPOExtTrainer adds it as a callback).
`trainer_state.json` carries its counters (JSON only), and the tensors cannot go there, so the reward model's
weights and the optimizer's state (safetensors) and the buffers and RNG (JSON) go to `checkpoint-N/online_rm/{name}/`:
written when transformers is about to save checkpoint-N (`on_step_end` / `on_epoch_end` with `should_save`), before
it writes `trainer_state.json`, which names the reward model, and before it deletes older checkpoints
(`save_total_limit`); into a temporary folder renamed into place, so the folder is whole or absent. A kill inside
that write leaves the previous checkpoint as it was. `on_train_begin` of a resumed run reads them back.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import SaveStrategy

from .guard import REWARD_ERROR_POLICIES, ObjectiveError
from .labelers import GoldLabeler, JudgeLabeler, QueueLabeler
from .objectives import completion_text

__all__ = [
    "MAX_SIZE",
    "SELECTORS",
    "SETTINGS",
    "OnlineRewardModel",
    "bradley_terry_loss",
    "check_device",
    "check_label",
    "check_name",
    "check_settings",
    "group_pairs",
    "select_random",
    "select_uncertain",
]

logger = logging.getLogger(__name__)

STATE_DIR = "online_rm"
_LABELS = (0.0, 0.5, 1.0)
_NAME = re.compile(r"[A-Za-z0-9_-]+")
# The cap of the buffer and held-out capacities and of `max_length`: far above any label budget or context, and below
# what a deque's `maxlen` or a tokenizer's length holds (larger values overflow when the model is built or called).
MAX_SIZE = 10**7


# ---------------------------------------------------------------------------------------------------------- the math
def bradley_terry_loss(
    scores_a: torch.Tensor, scores_b: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor | float = 0.0
) -> torch.Tensor:
    r"""Mean Bradley-Terry loss $-[y \log\sigma(r_a - r_b - m) + (1-y) \log\sigma(r_b - r_a - m)]$ over pairs.

    With `labels` all 1 this is TRL RewardTrainer's `-logsigmoid(chosen - rejected - margin).mean()`.

    Example:
    ```python
    >>> round(bradley_terry_loss(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([1.0])).item(), 6)
    0.313262
    >>> round(bradley_terry_loss(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([0.5])).item(), 6)
    0.813262

    ```
    """
    diff = scores_a - scores_b
    return -(labels * F.logsigmoid(diff - margins) + (1 - labels) * F.logsigmoid(-diff - margins)).mean()


def group_pairs(num_completions: int, num_generations: int, texts: Sequence[str] | None = None) -> list[tuple]:
    """All pairs `(i, j)`, i < j, of completions of the same group (blocks of `num_generations` contiguous rows).

    With `texts`, pairs of identical texts are left out (their label is a foregone tie).

    Example:
    ```python
    >>> group_pairs(4, 2)
    [(0, 1), (2, 3)]
    >>> group_pairs(6, 3, texts=["a", "a", "b", "c", "d", "e"])
    [(0, 2), (1, 2), (3, 4), (3, 5), (4, 5)]

    ```
    """
    if isinstance(num_generations, bool) or not isinstance(num_generations, int) or num_generations < 1:
        raise ValueError(f"`num_generations` must be an integer >= 1, got {num_generations!r}.")
    if num_completions % num_generations:
        raise ValueError(
            f"{num_completions} completions are not a whole number of groups of num_generations={num_generations}."
        )
    pairs = []
    for start in range(0, num_completions, num_generations):
        for i in range(start, start + num_generations):
            for j in range(i + 1, start + num_generations):
                if texts is None or texts[i] != texts[j]:
                    pairs.append((i, j))
    return pairs


def select_random(pairs: Sequence[tuple], k: int, scores: Sequence[float], rng: random.Random) -> list[tuple]:
    """`k` pairs drawn uniformly without replacement (all of them when there are fewer), in their original order.

    Example:
    ```python
    >>> select_random([(0, 1), (0, 2), (1, 2)], 2, [0.0, 0.0, 0.0], random.Random(0))
    [(0, 2), (1, 2)]

    ```
    """
    if k >= len(pairs):
        return list(pairs)
    chosen = sorted(rng.sample(range(len(pairs)), k))
    return [pairs[i] for i in chosen]


def select_uncertain(pairs: Sequence[tuple], k: int, scores: Sequence[float], rng: random.Random) -> list[tuple]:
    r"""The `k` pairs whose Bradley-Terry probability $\sigma(r_i - r_j)$ is closest to 0.5 (smallest $|r_i - r_j|$).

    Ties keep the pairs' order; `rng` is unused (the choice is deterministic).

    Example:
    ```python
    >>> select_uncertain([(0, 1), (0, 2), (1, 2)], 1, [0.0, 2.0, 0.1], random.Random(0))
    [(0, 2)]

    ```
    """
    ranked = sorted(range(len(pairs)), key=lambda n: abs(scores[pairs[n][0]] - scores[pairs[n][1]]))
    return [pairs[n] for n in sorted(ranked[:k])]


SELECTORS: dict[str, Callable] = {"random": select_random, "uncertain": select_uncertain}


def check_label(label: Any) -> float | None:
    """A label as a float in {0, 0.5, 1}, or `None` (abstain); a `ValueError` for anything else (an exception too).

    Example:
    ```python
    >>> check_label(1), check_label(0.5), check_label(None)
    (1.0, 0.5, None)
    >>> check_label(2)
    Traceback (most recent call last):
    ...
    ValueError: invalid label 2: a label must be 1 (a wins), 0 (b wins), 0.5 (tie) or None (abstain)

    ```
    """
    if label is None:
        return None
    if isinstance(label, BaseException):
        raise ValueError(f"the labeler failed on this pair: {type(label).__name__}: {label}")
    if not isinstance(label, bool) and isinstance(label, (int, float)) and float(label) in _LABELS:
        return float(label)
    raise ValueError(f"invalid label {label!r}: a label must be 1 (a wins), 0 (b wins), 0.5 (tie) or None (abstain)")


# ----------------------------------------------------------------------------------------------------- validation
def _check_int(
    field: str, value: Any, minimum: int, allow_none: bool = False, maximum: int | None = None
) -> int | None:
    if value is None and allow_none:
        return None
    too_big = maximum is not None and isinstance(value, int) and value > maximum
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or too_big:
        allowed = f"an integer >= {minimum}" + (f" and <= {maximum}" if too_big else "")
        raise ValueError(f"`{field}` must be {allowed}{' or None' if allow_none else ''}, got {value!r}.")
    return value


def _check_float(
    field: str, value: Any, minimum: float, strict: bool, allow_none: bool = False, maximum: float | None = None
) -> float | None:
    if value is None and allow_none:
        return None
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    too_big = ok and maximum is not None and value > maximum
    if not ok or (value <= minimum if strict else value < minimum) or too_big:
        allowed = f"a finite number {'>' if strict else '>='} {minimum:g}" + (
            f" and <= {maximum:g}" if too_big else ""
        )
        raise ValueError(f"`{field}` must be {allowed}{' or None' if allow_none else ''}, got {value!r}.")
    return float(value)


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


def check_device(device: Any, field: str = "device") -> torch.device | None:
    """A torch device (or None), parsed, not looked up: `"cuda:1"` passes on a machine without it.

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
    if device is None or isinstance(device, torch.device):
        return device
    if isinstance(device, str):
        try:
            return torch.device(device)
        except (RuntimeError, ValueError):
            pass
    raise ValueError(f"`{field}` must be a torch device such as 'cpu', 'cuda' or 'cuda:0', got {device!r}.")


# The numeric settings of OnlineRewardModel: name -> (kind, minimum, strictly greater, None allowed, maximum).
SETTINGS: dict[str, tuple[str, float, bool, bool, float | None]] = {
    "update_every": ("int", 0, False, False, None),
    "label_budget": ("int", 0, False, True, None),
    "pairs_per_update": ("int", 1, False, False, None),
    "buffer_size": ("int", 1, False, False, MAX_SIZE),
    "replay_pairs": ("int", 0, False, True, None),
    "heldout_size": ("int", 1, False, False, MAX_SIZE),
    "seed_epochs": ("int", 0, False, False, None),
    "update_steps": ("int", 1, False, False, None),
    "batch_size": ("int", 1, False, False, None),
    "max_length": ("int", 1, False, True, MAX_SIZE),
    "num_generations": ("int", 1, False, True, None),
    "seed": ("int", 0, False, False, None),
    # AdamW moves every weight by up to about `learning_rate` a step: above 1 one update can wreck the model.
    "learning_rate": ("float", 0.0, True, False, 1.0),
    "weight_decay": ("float", 0.0, False, False, None),
    "margin": ("float", 0.0, False, False, None),
    "max_grad_norm": ("float", 0.0, True, True, None),
    "heldout_fraction": ("float", 0.0, False, False, None),
}


def check_settings(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The numeric settings among `settings` (keys of `SETTINGS`), checked; the error names `prefix + key`.

    Example:
    ```python
    >>> check_settings({"update_every": 2, "learning_rate": 1})
    {'update_every': 2, 'learning_rate': 1.0}
    >>> check_settings({"heldout_fraction": 1.5}, prefix="online_reward_model.")
    Traceback (most recent call last):
    ...
    ValueError: `online_reward_model.heldout_fraction` must be in [0, 1), got 1.5.

    ```
    """
    out = {}
    for key, value in settings.items():
        if key not in SETTINGS:
            continue
        kind, minimum, strict, allow_none, maximum = SETTINGS[key]
        field = prefix + key
        if kind == "int":
            out[key] = _check_int(field, value, int(minimum), allow_none=allow_none, maximum=maximum)
        else:
            out[key] = _check_float(field, value, minimum, strict=strict, allow_none=allow_none, maximum=maximum)
    if out.get("heldout_fraction") is not None and out["heldout_fraction"] >= 1:
        raise ValueError(f"`{prefix}heldout_fraction` must be in [0, 1), got {settings['heldout_fraction']!r}.")
    return out


def _check_seed_pairs(seed_pairs: Any, field: str = "seed_pairs") -> list[dict[str, Any]]:
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
        margin = _check_float(f"{field}[{index}].margin", pair.get("margin", 0.0), 0.0, strict=False)
        out.append(
            {"prompt": pair["prompt"], "a": pair["chosen"], "b": pair["rejected"], "label": 1.0, "margin": margin}
        )
    return out


# ----------------------------------------------------------------------------------------------------- the objective
class OnlineRewardModel(TrainerCallback, ExportableState):
    """A reward model used as an objective that learns from pairwise labels during training (module docstring).

    Args:
        model (`str` or `PreTrainedModel`):
            A sequence-classification reward model with one label: a path, a Hub id, a kit name (`"tiny:tiny"`:
            the kit's reward model, `reward/` of the kit directory), or a loaded model (then pass `tokenizer`).
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            The reward model's tokenizer; loaded from the path by default.
        labeler (`Callable`, *optional*):
            `GoldLabeler`, `JudgeLabeler`, `QueueLabeler` or any callable of the labeler protocol
            (`trl_grpo_ext.rewards.labelers`). Without one (or with `update_every=0`) the model is frozen.
        name (`str`, *optional*, defaults to `"rm"`):
            The objective's name (`__name__`), its metrics' prefix (`rm/loss`, ...) and its checkpoint directory
            (`online_rm/rm`): ASCII letters, digits, `_` and `-`. A resumed run must keep it.
        update_every (`int`, *optional*, defaults to `1`):
            Learn every this many reward calls (generation batches); 0 never.
        label_budget (`int`, *optional*):
            Total labels (answered pairs, ties included) the run may spend; then the model freezes. None: no limit.
        pairs_per_update (`int`, *optional*, defaults to `8`):
            Pairs sent to the labeler per update.
        selector (`str` or `Callable`, *optional*, defaults to `"random"`):
            `"random"` (seeded, within groups), `"uncertain"` (BT probability closest to 0.5), or a callable
            `(pairs, k, scores, rng) -> pairs`.
        buffer_size (`int`, *optional*, defaults to `1024`):
            Capacity of the FIFO replay buffer of labelled training pairs (at most `MAX_SIZE`, 10**7).
        replay_pairs (`int`, *optional*):
            Buffer pairs trained on with each update's new pairs; defaults to `pairs_per_update`.
        heldout_fraction (`float`, *optional*, defaults to `0.2`):
            Fraction of each round's labels kept out of training for `rm/pair_accuracy`, in [0, 1).
        heldout_size (`int`, *optional*, defaults to `256`):
            Capacity of the FIFO held-out set (at most 10**7).
        seed_pairs (`list[dict]`, *optional*):
            Labelled pairs `{prompt, chosen, rejected[, margin]}` trained on before the first step (free of budget).
        seed_epochs (`int`, *optional*, defaults to `1`):
            Passes over `seed_pairs`, in minibatches of `pairs_per_update`.
        update_steps (`int`, *optional*, defaults to `1`):
            Optimizer steps per update, each on all of the update's pairs.
        learning_rate (`float`, *optional*, defaults to `1e-5`):
            AdamW learning rate, in (0, 1]. A step whose loss or gradients are not finite is not applied (the
            error policy: `raise` stops, `skip` warns once and logs `{name}/skipped_steps` at such an update).
        weight_decay (`float`, *optional*, defaults to `0.0`):
            AdamW weight decay (>= 0).
        margin (`float`, *optional*, defaults to `0.0`):
            Margin m of the loss for the labelled pairs (>= 0).
        max_grad_norm (`float`, *optional*, defaults to `1.0`):
            Gradient clipping norm (> 0), or None.
        batch_size (`int`, *optional*, defaults to `32`):
            Texts per scoring forward.
        max_length (`int`, *optional*):
            Keep at most this many tokens of a text (truncated on the right), at most 10**7.
        num_generations (`int`, *optional*):
            The group size, for plain `trl.GRPOTrainer`; GRPOExtTrainer passes it on every call.
        error_policy (`str`, *optional*):
            `"raise"` or `"skip"` for labeler faults; defaults to the trainer's `reward_error_policy` (else raise).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the pair selection and the held-out split.
        device (`str`, *optional*):
            Where the reward model runs (a torch device name, checked when constructed); defaults to the trainer's
            device (else the model's).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        labeler: Callable | None = None,
        *,
        name: str = "rm",
        update_every: int = 1,
        label_budget: int | None = None,
        pairs_per_update: int = 8,
        selector: str | Callable = "random",
        buffer_size: int = 1024,
        replay_pairs: int | None = None,
        heldout_fraction: float = 0.2,
        heldout_size: int = 256,
        seed_pairs: Sequence[Mapping[str, Any]] | None = None,
        seed_epochs: int = 1,
        update_steps: int = 1,
        learning_rate: float = 1e-5,
        weight_decay: float = 0.0,
        margin: float = 0.0,
        max_grad_norm: float | None = 1.0,
        batch_size: int = 32,
        max_length: int | None = None,
        num_generations: int | None = None,
        error_policy: str | None = None,
        seed: int = 0,
        device: str | None = None,
    ):
        check_name(name)
        device = check_device(device)
        if labeler is not None and not callable(labeler):
            raise TypeError(f"`labeler` must be a callable of the labeler protocol, got {type(labeler).__name__}.")
        if isinstance(selector, str) and selector not in SELECTORS:
            raise ValueError(f"`selector` must be one of {sorted(SELECTORS)} or a callable, got {selector!r}.")
        if not isinstance(selector, str) and not callable(selector):
            raise ValueError(f"`selector` must be one of {sorted(SELECTORS)} or a callable, got {selector!r}.")
        if error_policy is not None and error_policy not in REWARD_ERROR_POLICIES:
            raise ValueError(
                f"`error_policy` must be one of {list(REWARD_ERROR_POLICIES)} or None, got {error_policy!r}."
            )
        settings = {
            "update_every": update_every,
            "label_budget": label_budget,
            "pairs_per_update": pairs_per_update,
            "buffer_size": buffer_size,
            "replay_pairs": replay_pairs,
            "heldout_size": heldout_size,
            "seed_epochs": seed_epochs,
            "update_steps": update_steps,
            "batch_size": batch_size,
            "max_length": max_length,
            "num_generations": num_generations,
            "seed": seed,
            "learning_rate": learning_rate,
            "weight_decay": weight_decay,
            "margin": margin,
            "max_grad_norm": max_grad_norm,
            "heldout_fraction": heldout_fraction,
        }
        for key, value in check_settings(settings).items():
            setattr(self, key, value)
        self.name = self.__name__ = name
        self.labeler = labeler
        self.selector = selector
        self.error_policy = error_policy
        self.required_columns: list = []
        self.needs_group = True  # GRPOExtTrainer calls it on the global batch with `num_generations`
        self._seed_pairs = _check_seed_pairs(seed_pairs)

        self._model, self._tokenizer = _load_reward_model(model, tokenizer)
        self._model_name = (
            str(model)
            if isinstance(model, (str, os.PathLike))
            else getattr(self._model.config, "_name_or_path", "") or type(self._model).__name__
        )
        self._device = device if device is not None else next(self._model.parameters()).device
        self._model.to(self._device).eval()  # eval throughout: no dropout, so no draw from the policy's RNG
        self._optimizer = torch.optim.AdamW(
            self._model.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        self._rng = random.Random(self.seed)
        self._buffer: deque = deque(maxlen=self.buffer_size)
        self._heldout: deque = deque(maxlen=self.heldout_size)
        self._counters = {"calls": 0, "updates": 0, "labels_used": 0, "seeded": not self._seed_pairs}
        self._frozen_logged = False
        self._warned_skip = False
        self._warned_nonfinite = False
        self._policy_model: Callable[[], Any] | None = None  # weakref to the trainer's model: eval calls don't learn
        self._trainer: Callable[[], Any] | None = None  # weakref to the trainer: its other online reward models
        self._global_step = 0
        self._saved_step: int | None = None  # the step whose checkpoint holds this state already

    # ------------------------------------------------------------------ public views
    @property
    def model(self):
        """The reward model (a transformers sequence classifier)."""
        return self._model

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def updates(self) -> int:
        """Update rounds done."""
        return self._counters["updates"]

    @property
    def labels_used(self) -> int:
        return self._counters["labels_used"]

    @property
    def budget_left(self) -> int | None:
        return None if self.label_budget is None else max(self.label_budget - self.labels_used, 0)

    @property
    def frozen(self) -> bool:
        """Whether the model no longer learns: no labeler, `update_every=0`, or the budget spent."""
        return self.labeler is None or self.update_every == 0 or self.budget_left == 0

    @property
    def buffer(self) -> list[dict[str, Any]]:
        return list(self._buffer)

    @property
    def heldout(self) -> list[dict[str, Any]]:
        return list(self._heldout)

    def __repr__(self) -> str:
        return f"OnlineRewardModel(name={self.name!r}, labeler={self.labeler!r}, budget={self.label_budget})"

    # ------------------------------------------------------------------ scoring
    def _text(self, prompt: Any, completion: Any) -> str:
        """TRL's reward-model text: chat template of prompt + completion when conversational, else concatenation."""
        if isinstance(prompt, list):
            from .principles import prompt_text

            messages = [*prompt, {"role": "assistant", "content": completion_text(completion)}]
            if getattr(self._tokenizer, "chat_template", None):
                return self._tokenizer.apply_chat_template(messages, tokenize=False)
            return prompt_text(prompt) + completion_text(completion)
        return ("" if prompt is None else str(prompt)) + completion_text(completion)

    def _forward(self, texts: list[str]) -> torch.Tensor:
        inputs = self._tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            padding_side="right",
            add_special_tokens=False,
            truncation=self.max_length is not None,
            max_length=self.max_length,
        ).to(self._device)
        return self._model(**inputs).logits[:, 0].float()

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """Reward-model scores of ready texts, in batches of `batch_size`, without gradients."""
        scores: list[float] = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                scores.extend(self._forward(list(texts[start : start + self.batch_size])).tolist())
        return scores

    def score(self, prompts: Sequence[Any] | None, completions: Sequence[Any]) -> list[float]:
        """Reward-model scores of completions of prompts (the objective's value without learning)."""
        prompts = list(prompts) if prompts is not None else [None] * len(completions)
        return self.score_texts([self._text(p, c) for p, c in zip(prompts, completions)])

    def pair_loss(self, pairs: Sequence[Mapping[str, Any]]) -> float:
        """Bradley-Terry loss of the current model on labelled pairs `{prompt, a, b, label[, margin]}`."""
        with torch.no_grad():
            return self._loss(list(pairs)).item()

    def pair_accuracy(self, pairs: Sequence[Mapping[str, Any]]) -> float | None:
        """Fraction of decided pairs (label 0 or 1) the model orders like the label; None when there are none."""
        decided = [p for p in pairs if p["label"] != 0.5]
        if not decided:
            return None
        scores = self.score_texts([self._text(p["prompt"], c) for p in decided for c in (p["a"], p["b"])])
        right = [(scores[2 * k] > scores[2 * k + 1]) == (p["label"] == 1.0) for k, p in enumerate(decided)]
        return sum(right) / len(right)

    # ------------------------------------------------------------------ the reward function
    def __call__(self, prompts=None, completions=None, num_generations=None, log_metric=None, **kwargs):
        n = len(completions)
        prompts = list(prompts) if prompts is not None else [None] * n
        scores = self.score(prompts, completions)
        if self._learning():
            self._counters["calls"] += 1
            if not self._counters["seeded"]:
                self._train_seed_pairs()
            if not self.frozen and self._counters["calls"] % self.update_every == 0:
                group = num_generations or self.num_generations
                if group is None:
                    raise ValueError(
                        f"The online reward model {self.name!r} picks pairs within groups, so it needs "
                        "`num_generations`: GRPOExtTrainer passes it; with plain trl.GRPOTrainer pass "
                        "OnlineRewardModel(..., num_generations=K)."
                    )
                columns = {k: v for k, v in kwargs.items() if isinstance(v, list) and len(v) == n}
                columns.pop("completion_ids", None)
                self._update(prompts, list(completions), scores, group, columns, log_metric)
        if callable(log_metric):
            log_metric(f"{self.name}/labels_used", float(self.labels_used))
            if self.label_budget is not None:
                log_metric(f"{self.name}/budget_left", float(self.budget_left))
        return scores

    def _learning(self) -> bool:
        policy = self._policy_model() if self._policy_model is not None else None
        return policy is None or policy.training

    def _policy(self) -> str:
        return self.error_policy or "raise"

    def _fault(self, message: str, cause: BaseException | None = None) -> None:
        """A labeler fault: raise under "raise"; warn (once) under "skip"."""
        text = f"Objective {self.name!r}: labeler {self.labeler!r} {message}"
        if self._policy() == "raise":
            raise ObjectiveError(text) from cause
        if not self._warned_skip:
            logger.warning(
                "%s; reward_error_policy='skip' drops the pair(s). Further faults are only counted in "
                "%s/label_errors.",
                text,
                self.name,
            )
            self._warned_skip = True

    def _label(self, pairs: list[dict[str, Any]], columns: dict[str, list]) -> tuple[list[tuple], int]:
        """Ask the labeler: `[(pair index, labelled pair)]` (abstentions dropped) and the number of faulty pairs."""
        prompts = [p["prompt"] for p in pairs]
        try:
            raw = list(self.labeler(prompts, [p["a"] for p in pairs], [p["b"] for p in pairs], **columns))
        except Exception as exc:
            self._fault(f"raised {type(exc).__name__}: {exc}", exc)
            return [], len(pairs)
        if len(raw) != len(pairs):
            self._fault(f"returned {len(raw)} labels for {len(pairs)} pairs")
            return [], len(pairs)
        labelled, faults = [], 0
        for index, (pair, label) in enumerate(zip(pairs, raw)):
            try:
                value = check_label(label)
            except ValueError as exc:
                faults += 1
                cause = label if isinstance(label, BaseException) else None
                self._fault(f"gave pair index {index} ({pair['a']!r} vs {pair['b']!r}): {exc}", cause)
                continue
            if value is not None:
                labelled.append((index, self._labelled(pair, value)))
        return labelled, faults

    def _labelled(self, pair: Mapping[str, Any], label: float) -> dict[str, Any]:
        return {
            "prompt": pair["prompt"],
            "a": pair["a"],
            "b": pair["b"],
            "label": label,
            "margin": self.margin if label != 0.5 else 0.0,
        }

    def _update(self, prompts, completions, scores, group, columns, log_metric) -> None:
        texts = [completion_text(c) for c in completions]
        candidates = group_pairs(len(completions), group, texts)
        chosen, answered, faults, late, late_faults = _on_main_process(
            lambda: self._select_and_label(candidates, prompts, completions, scores, columns), self._rng
        )
        agreement = self._agreement([(chosen[index], pair) for index, pair in answered], scores)
        labelled, faults = [pair for _, pair in answered] + late, faults + late_faults
        if self.label_budget is not None:
            labelled = labelled[: self.label_budget - self.labels_used]
        self._counters["labels_used"] += len(labelled)

        k_out = round(self.heldout_fraction * len(labelled))
        out = set(self._rng.sample(range(len(labelled)), k_out)) if k_out else set()
        self._heldout.extend(p for i, p in enumerate(labelled) if i in out)
        new = [p for i, p in enumerate(labelled) if i not in out]
        replay_n = self.pairs_per_update if self.replay_pairs is None else self.replay_pairs
        replay = self._rng.sample(list(self._buffer), min(replay_n, len(self._buffer))) if self._buffer else []
        self._buffer.extend(new)
        batch = new + replay

        metrics: dict[str, float] = {}
        loss, skipped = self._train(batch) if batch else (None, 0)
        if loss is not None:
            metrics["loss"] = loss
            self._counters["updates"] += 1
        accuracy = self.pair_accuracy(list(self._heldout))
        if accuracy is not None:
            metrics["pair_accuracy"] = accuracy
        if agreement is not None:
            metrics["gold_agreement"] = agreement
        if self._policy() == "skip":
            metrics["label_errors"] = float(faults)
        if skipped:
            metrics["skipped_steps"] = float(skipped)  # under "skip": "raise" stopped in `_train`
        if self.budget_left == 0 and not self._frozen_logged:
            logger.warning(
                "Online reward model %r: the label budget of %d labels is spent after %d update(s); the reward model "
                "is frozen from now on.",
                self.name,
                self.label_budget,
                self.updates,
            )
            self._frozen_logged = True
        if callable(log_metric):
            for key, value in metrics.items():
                log_metric(f"{self.name}/{key}", float(value))

    def _select_and_label(self, candidates, prompts, completions, scores, columns):
        """Pick this round's pairs within the budget, label them, collect late answers (one process: `_update`)."""
        outstanding = int(getattr(self.labeler, "outstanding", 0) or 0)
        k = self.pairs_per_update
        if self.label_budget is not None:
            k = min(k, self.label_budget - self.labels_used - outstanding)
        selector = SELECTORS[self.selector] if isinstance(self.selector, str) else self.selector
        chosen = selector(candidates, k, scores, self._rng) if k > 0 and candidates else []
        pairs = [{"prompt": prompts[i], "a": completions[i], "b": completions[j]} for i, j in chosen]
        pair_columns = {key: [values[i] for i, _ in chosen] for key, values in columns.items()}
        answered, faults = self._label(pairs, pair_columns) if pairs else ([], 0)
        late, late_faults = self._collect_late()
        return chosen, answered, faults, late, late_faults

    def _collect_late(self) -> tuple[list[dict[str, Any]], int]:
        """Labels that arrived for pairs queued in earlier rounds (`QueueLabeler.collect`), checked like the others."""
        collect = getattr(self.labeler, "collect", None)
        if not callable(collect):
            return [], 0
        try:
            answered = collect()
        except Exception as exc:
            self._fault(f"raised {type(exc).__name__} collecting queued labels: {exc}", exc)
            return [], 0
        out, faults = [], 0
        for pair, label in answered:
            try:
                value = check_label(label)
            except ValueError as exc:
                faults += 1
                self._fault(f"gave the queued pair ({pair.get('a')!r} vs {pair.get('b')!r}): {exc}")
                continue
            if value is not None:
                out.append(self._labelled(pair, value))
        return out, faults

    def _agreement(self, answered: list[tuple], scores: list[float]) -> float | None:
        """With a GoldLabeler: how often the model's preference before learning agrees with the gold's decided labels."""
        if not isinstance(self.labeler, GoldLabeler):
            return None
        agree = [
            (scores[i] > scores[j]) == (pair["label"] == 1.0) for (i, j), pair in answered if pair["label"] != 0.5
        ]
        return sum(agree) / len(agree) if agree else None

    # ------------------------------------------------------------------ learning
    def _loss(self, pairs: list[dict[str, Any]]) -> torch.Tensor:
        texts = [self._text(p["prompt"], c) for p in pairs for c in (p["a"], p["b"])]
        scores = self._forward(texts)
        labels = torch.tensor([p["label"] for p in pairs], device=scores.device)
        margins = torch.tensor([p.get("margin", 0.0) for p in pairs], device=scores.device)
        return bradley_terry_loss(scores[0::2], scores[1::2], labels, margins)

    def _train(self, pairs: list[dict[str, Any]], steps: int | None = None) -> tuple[float | None, int]:
        """`steps` AdamW steps on the pairs (all of them each step): the mean loss before the steps taken (None if
        none was) and the number of steps not taken.

        A step whose loss or gradient norm is not finite is not applied, nor the steps after it (they would see the
        same model and pairs): `_non_finite` raises or warns by the error policy. TRL scores rewards under no-grad /
        inference mode; this builds fresh tensors with autograd back on.
        """
        steps = steps or self.update_steps
        losses: list[float] = []
        bad: tuple[float, float] | None = None
        with torch.inference_mode(False), torch.enable_grad():
            for _ in range(steps):
                self._optimizer.zero_grad(set_to_none=True)
                loss = self._loss(pairs)
                loss.backward()
                # The norm before clipping; with max_grad_norm None, math.inf only measures it.
                norm = torch.nn.utils.clip_grad_norm_(
                    self._model.parameters(), self.max_grad_norm if self.max_grad_norm is not None else math.inf
                )
                if not (torch.isfinite(loss) and torch.isfinite(norm)):
                    bad = (loss.item(), norm.item())
                    break
                self._optimizer.step()
                losses.append(loss.item())
        self._optimizer.zero_grad(set_to_none=True)
        if bad is not None:
            self._non_finite(*bad, len(pairs))
        return (sum(losses) / len(losses) if losses else None), steps - len(losses)

    def _non_finite(self, loss: float, norm: float, pairs: int) -> None:
        """A reward-model step not applied: raise under "raise"; warn (once) under "skip"."""
        text = (
            f"Objective {self.name!r}: the reward-model loss is {loss:g} with gradient norm {norm:g} on {pairs} "
            "pair(s), so the optimizer step is not applied (the model stays as it was; the labels stay in the replay "
            "buffer). Lower `learning_rate` or `margin`, or check the reward model's scores."
        )
        if self._policy() == "raise":
            raise ObjectiveError(text)
        if not self._warned_nonfinite:
            logger.warning("%s Further skipped steps are only counted in %s/skipped_steps.", text, self.name)
            self._warned_nonfinite = True

    def _train_seed_pairs(self) -> None:
        for _ in range(self.seed_epochs):
            for start in range(0, len(self._seed_pairs), self.pairs_per_update):
                self._train(self._seed_pairs[start : start + self.pairs_per_update], steps=1)
        self._buffer.extend(self._seed_pairs)
        self._counters["seeded"] = True

    # ------------------------------------------------------------------ trainer wiring
    def bind_trainer(self, trainer) -> None:
        """Called by GRPOExtTrainer: run on its device, learn only in training, take its `reward_error_policy`."""
        if getattr(trainer.args, "restore_callback_states_from_checkpoint", False):
            raise ValueError(
                f"The online reward model {self.name!r} is a reward function and a callback at once, and restores "
                "itself on resume; `restore_callback_states_from_checkpoint=True` would replace the callback by a new "
                "object that is not the reward function. Leave it False (the default)."
            )
        device = trainer.accelerator.device
        if device != self._device:
            self._model.to(device)
            self._device = device
        self._policy_model = weakref.ref(trainer.model)
        self._trainer = weakref.ref(trainer)
        if self.error_policy is None:
            self.error_policy = getattr(trainer.args, "reward_error_policy", "raise")

    def settings(self) -> dict[str, Any]:
        """The settings a checkpoint records (a resumed run with other settings warns): the numbers, the selector, the
        `model` it was built from and the labeler (`_labeler_spec`)."""
        return {
            key: getattr(self, key)
            for key in (
                "update_every",
                "label_budget",
                "pairs_per_update",
                "buffer_size",
                "replay_pairs",
                "heldout_fraction",
                "heldout_size",
                "update_steps",
                "learning_rate",
                "weight_decay",
                "margin",
                "seed",
            )
        } | {
            "selector": self.selector if isinstance(self.selector, str) else repr(self.selector),
            "model": self._model_name,
            "labeler": _labeler_spec(self.labeler),
        }

    def state(self) -> dict:
        # JSON only (trainer_state.json); the tensors and buffers go to the checkpoint directory (`_save_checkpoint`).
        return {
            "args": {},
            "attributes": {
                "name": self.name,
                "step": self._global_step,
                **self._counters,
                "settings": self.settings(),
            },
        }

    def on_step_end(self, args, state, control, **kwargs):
        self._global_step = state.global_step
        self._save_ahead(args, state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._save_ahead(args, state, control)

    def on_save(self, args, state, control, **kwargs):
        # Written ahead (`_save_ahead`) unless the save was decided after this callback ran (`save_strategy="best"`).
        self._save_checkpoint(args, state)

    def _save_ahead(self, args, state, control) -> None:
        """Write the state into checkpoint-N when transformers is about to save it (`should_save` is set by now):
        before it writes `trainer_state.json`, which names this reward model, and before it deletes older checkpoints
        (`save_total_limit`). A kill inside this write leaves checkpoint-N without `trainer_state.json` and the
        previous checkpoint whole: there is always a checkpoint to resume from."""
        if control.should_save and args.save_strategy != SaveStrategy.BEST:
            self._save_checkpoint(args, state)

    def _save_checkpoint(self, args, state) -> None:
        if state.is_world_process_zero and self._saved_step != state.global_step:
            self.save_state(Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE_DIR / self.name)
            self._saved_step = state.global_step

    def on_train_begin(self, args, state, control, **kwargs):
        """A resumed run: read the reward model's state back from the checkpoint it resumes from.

        Refused: a checkpoint whose reward model this run does not continue (renamed), since resuming would start a
        new one and drop the learnt one. Other recorded settings (the numbers, `model`, the labeler) only warn.
        """
        self._global_step = state.global_step
        self._saved_step = None
        saved = state.stateful_callbacks.get(type(self).__name__)
        entries = saved if isinstance(saved, list) else [saved] if saved else []
        mine = next((e for e in entries if e.get("attributes", {}).get("name") == self.name), None)
        if state.global_step > 0 and mine is None:
            self._refuse_orphans(entries, state.global_step)
        if state.global_step == 0 or mine is None or mine["attributes"].get("step") != state.global_step:
            if not self._counters["seeded"]:
                self._train_seed_pairs()
            return
        candidates = [
            Path(c) / STATE_DIR / self.name
            for c in (
                getattr(args, "resume_from_checkpoint", None),
                Path(args.output_dir) / f"checkpoint-{state.global_step}",
            )
            if isinstance(c, (str, os.PathLike))
        ]
        directory = next((c for c in candidates if (c / "state.json").exists()), None)
        if directory is None:
            raise FileNotFoundError(
                f"The resumed run's checkpoint (step {state.global_step}) records the online reward model "
                f"{self.name!r}, but none of {[str(c) for c in candidates]} holds its state; set "
                "`resume_from_checkpoint` in the config to the checkpoint directory."
            )
        recorded = mine["attributes"].get("settings") or {}
        changed = {k: (recorded[k], v) for k, v in self.settings().items() if k in recorded and recorded[k] != v}
        try:
            self.load_state(directory)
        except Exception as err:
            if "model" not in changed:
                raise
            old, new = changed["model"]
            first_lines = " ".join(line.strip() for line in str(err).splitlines()[:2]).rstrip(".")
            raise ValueError(
                f"Online reward model {self.name!r}: the checkpoint's reward model was learnt from {old!r} and cannot "
                f"be loaded into this run's `model` {new!r} ({type(err).__name__}: {first_lines}). Set `model` back "
                f"to {old!r} to continue it, or start a fresh run (another `output_dir`, no `resume_from_checkpoint`)."
            ) from err
        if changed:
            text = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
            notes = ""
            if "model" in changed:
                notes += (
                    f"; the reward model's weights are the checkpoint's (learnt from {changed['model'][0]!r}), this "
                    "run's `model` gives the architecture and the tokenizer"
                )
            if "labeler" in changed:
                notes += "; the pairs already in the buffer and the held-out set keep the old labeler's labels"
            warnings.warn(
                f"Online reward model {self.name!r}: the checkpoint was saved with other settings ({text}); training "
                f"continues with this run's settings{notes}.",
                UserWarning,
                stacklevel=2,
            )

    def _refuse_orphans(self, entries: list[dict], step: int) -> None:
        """A checkpoint that holds an online reward model none of this run's continues: refuse to drop it."""
        trainer = self._trainer() if self._trainer is not None else None
        live = {self.name}
        if trainer is not None:
            live |= {cb.name for cb in trainer.callback_handler.callbacks if isinstance(cb, OnlineRewardModel)}
        orphans = [e["attributes"] for e in entries if e.get("attributes", {}).get("name") not in live]
        if not orphans:
            return
        old = orphans[0]
        raise ValueError(
            f"The checkpoint of step {step} holds the online reward model {old['name']!r} "
            f"({old.get('labels_used')} labels used), but this run's is named {self.name!r}: resuming would start "
            f"{self.name!r} from scratch (labels counted from 0, the label budget spent again) and drop what "
            f"{old['name']!r} learnt. Set the name back (`online_reward_model.name: {old['name']}`, or "
            f"OnlineRewardModel(name={old['name']!r})) to continue it, or start a fresh run (another `output_dir`, "
            "no `resume_from_checkpoint`)."
        )

    # ------------------------------------------------------------------ state files
    def save_state(self, directory: str | os.PathLike) -> None:
        """Write weights (`model.safetensors`), optimizer (`optimizer.safetensors` + JSON) and the rest (`state.json`).

        The files are written into a temporary sibling folder, renamed to `directory` once complete: `directory`
        holds a whole state or none (a previous one is replaced). Leftovers of an interrupted write are removed.
        """
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{directory.name}.tmp-"
        for leftover in directory.parent.iterdir():
            if leftover.name.startswith(prefix):
                shutil.rmtree(leftover, ignore_errors=True)
        partial = directory.parent / f"{prefix}{os.getpid()}"
        partial.mkdir()
        try:
            self._write_state(partial)
            if directory.exists():
                shutil.rmtree(directory)
            partial.rename(directory)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise

    def _write_state(self, directory: Path) -> None:
        from safetensors.torch import save_file, save_model

        save_model(self._model, str(directory / "model.safetensors"))
        optimizer = self._optimizer.state_dict()
        tensors, scalars = {}, {}
        for index, entry in optimizer["state"].items():
            for key, value in entry.items():
                if torch.is_tensor(value):
                    tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{index}.{key}"] = value
        save_file(tensors, str(directory / "optimizer.safetensors"))
        version, internal, gauss = self._rng.getstate()
        labeler_state = getattr(self.labeler, "state_dict", None)
        payload = {
            "counters": self._counters,
            "step": self._global_step,
            "frozen_logged": self._frozen_logged,
            "rng": [version, list(internal), gauss],
            "buffer": list(self._buffer),
            "heldout": list(self._heldout),
            "optimizer": {"param_groups": optimizer["param_groups"], "scalars": scalars},
            "labeler": labeler_state() if callable(labeler_state) else None,
            "settings": self.settings(),
        }
        (directory / "state.json").write_text(json.dumps(payload, default=list))

    def load_state(self, directory: str | os.PathLike) -> None:
        """Read what `save_state` wrote."""
        from safetensors.torch import load_file, load_model

        directory = Path(directory)
        payload = json.loads((directory / "state.json").read_text())
        load_model(self._model, str(directory / "model.safetensors"), device=str(self._device))
        tensors = load_file(str(directory / "optimizer.safetensors"), device=str(self._device))
        state: dict[int, dict[str, Any]] = {}
        for key, value in [*tensors.items(), *payload["optimizer"]["scalars"].items()]:
            index, _, name = key.partition(".")
            state.setdefault(int(index), {})[name] = value
        for entry in state.values():
            if "step" in entry and torch.is_tensor(entry["step"]):
                entry["step"] = entry["step"].cpu()  # AdamW keeps `step` on the CPU unless capturable/fused
        groups = payload["optimizer"]["param_groups"]
        for group in groups:
            if isinstance(group.get("betas"), list):
                group["betas"] = tuple(group["betas"])
        self._optimizer.load_state_dict({"state": state, "param_groups": groups})
        self._counters = dict(payload["counters"])
        self._global_step = payload["step"]
        self._frozen_logged = payload["frozen_logged"]
        version, internal, gauss = payload["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._buffer = deque(payload["buffer"], maxlen=self.buffer_size)
        self._heldout = deque(payload["heldout"], maxlen=self.heldout_size)
        load_labeler = getattr(self.labeler, "load_state_dict", None)
        if payload.get("labeler") is not None and callable(load_labeler):
            load_labeler(payload["labeler"])


def _labeler_spec(labeler: Any) -> str | None:
    """The labeler as a checkpoint records it: the repr of the package's labelers (a judge labeler with its questions),
    else the callable's qualified name; never an object's address, so an unchanged labeler compares equal.

    Example:
    ```python
    >>> from trl_grpo_ext.rewards import accuracy
    >>> _labeler_spec(GoldLabeler(accuracy)), _labeler_spec(check_label)
    ('GoldLabeler(accuracy)', 'trl_grpo_ext.rewards.online.check_label')

    ```
    """
    if labeler is None:
        return None
    if isinstance(labeler, JudgeLabeler):
        return f"{labeler!r} principles={[p.question for p in labeler.objective.principles]!r}"
    if isinstance(labeler, (GoldLabeler, QueueLabeler)):
        return repr(labeler)
    named = labeler if hasattr(labeler, "__qualname__") else type(labeler)
    return f"{named.__module__}.{named.__qualname__}"


def _on_main_process(fn: Callable[[], Any], rng: random.Random) -> Any:
    """`fn()` on process 0 only, its result (and `rng`'s state after it) handed to every process.

    Every process holds a copy of the reward model and makes the same update on the global batch; the labeler is asked
    once, on process 0: a judge endpoint is called once per pair, a queue file has one writer, and a labeler that
    answers differently on two calls (a timeout, a person) cannot make the copies diverge. An error on process 0 is
    raised on every process (an `ObjectiveError` as one, with its message), so none waits on a collective.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return fn()
    payload: list[Any] = [None]
    error: BaseException | None = None
    if dist.get_rank() == 0:
        try:
            payload = [("ok", fn(), rng.getstate())]
        except Exception as exc:
            error = exc
            payload = [("error", isinstance(exc, ObjectiveError), f"{type(exc).__name__} on process 0: {exc}")]
    dist.broadcast_object_list(payload, src=0)
    status, *rest = payload[0]
    if error is not None:
        raise error
    if status == "error":
        objective_error, message = rest
        raise (ObjectiveError if objective_error else RuntimeError)(message)
    result, state = rest
    rng.setstate(state)
    return result


def _load_reward_model(model: Any, tokenizer: Any):
    """(model, tokenizer) from a loaded model, a path / Hub id, or a kit name (its `reward/` directory)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ..kit import is_kit_name, resolve_model_path

    if isinstance(model, (str, os.PathLike)):
        path = str(model)
        if is_kit_name(path):
            path = str(Path(resolve_model_path(path)) / "reward")
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(path)
    elif not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a path, a Hub id, a kit name or a loaded model, got {type(model).__name__}.")
    if tokenizer is None:
        raise ValueError("`tokenizer` is required with a loaded `model` (the reward model's own tokenizer).")
    if getattr(model.config, "num_labels", None) != 1:
        raise ValueError(
            f"`model` must be a sequence classifier with one label (a scalar reward), got num_labels="
            f"{getattr(model.config, 'num_labels', None)!r}."
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.float(), tokenizer
