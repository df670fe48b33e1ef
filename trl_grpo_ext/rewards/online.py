r"""An online reward model: a sequence-classification reward model that keeps learning from pairwise labels.

The objective scores each completion with a reward model $r_\phi(x, y)$ (TRL's convention: one label, the logit of
the last non-padding token of prompt + completion; `reward_model.py` loads it). Every `update_every` calls
(generation batches) it picks pairs $(y_a, y_b)$ *within groups* (two completions of the same prompt: the
K = `num_generations` contiguous rows TRL lays out per prompt), asks a labeler which is better
($y \in \{1, 0.5, 0\}$: a, tie, b), and takes a few AdamW steps on TRL RewardTrainer's Bradley-Terry loss, with a
soft label for ties and an optional margin $m$:

$$\mathcal{L} = -\big[\, y \log \sigma(r_a - r_b - m) + (1 - y) \log \sigma(r_b - r_a - m) \,\big]$$

($y = 1$ is exactly $-\log\sigma(r_w - r_l - m)$.) A batch is scored *before* its labels are learnt, so the rewards
of batch n come from the model trained on the labels of batches < n. Of each round's labels a fraction
(`heldout_fraction`) is kept out of training, and the model's accuracy on those held-out pairs is logged.

Where it runs: inside the reward call, which TRL makes once per generation batch (under its no-grad scoring in parts
of the loop); the update builds fresh tensors under `torch.inference_mode(False)` and `torch.enable_grad()`, with the
reward model's own optimizer. The group size comes from GRPOExtTrainer, which calls group objectives
(`needs_group = True`) on the whole global batch with `num_generations`; every process therefore makes the same
update and the copies stay equal. The labeler is asked on process 0 only and its labels are broadcast
(accelerate's `broadcast_object_list`), so a judge endpoint is called once, a label queue has one writer, and a
labeler that would answer twice differently cannot split the copies; the `rm/*` metrics are then the same global
value on every process. With plain `trl.GRPOTrainer`, pass `num_generations` to the constructor (and train on one
process).

State: the objective is also a `TrainerCallback` and `ExportableState` (GRPOExtTrainer adds it as a callback).
`trainer_state.json` carries its counters (JSON only), and the tensors cannot go there, so the reward model's
weights and the optimizer's state (safetensors) and the buffers and RNG (JSON) go to `checkpoint-N/online_rm/{name}/`:
written when transformers is about to save checkpoint-N (`on_step_end` / `on_epoch_end` with `should_save`), before
it writes `trainer_state.json`, which names the reward model, and before it deletes older checkpoints
(`save_total_limit`); into a temporary folder renamed into place, so the folder is whole or absent. A kill inside
that write leaves the previous checkpoint as it was (`online_checkpoint.py`). `on_train_begin` of a resumed run reads
them back.

The pieces live by job: the Bradley-Terry loss, the pairs, the selectors and the labels in `bradley_terry.py`, the
settings (default, check, documentation of each) in `online_settings.py`, the state files in `online_checkpoint.py`,
the network in `reward_model.py`, the config block and the `learned_preference` objective in `online_config.py`.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import random
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import SaveStrategy

from ..checks import describe_settings
from .bradley_terry import (
    SELECTORS,
    bradley_terry_loss,
    check_label,
    group_pairs,
    select_random,
    select_uncertain,
)
from .guard import ObjectiveError
from .labelers import GoldLabeler, JudgeLabeler, QueueLabeler
from .objectives import completion_text
from .online_checkpoint import STATE_DIR, read_state, save_atomically, write_state
from .online_settings import (
    MAX_SIZE,
    OnlineRewardModelSettings,
    check_device,
    check_name,
    seed_pairs_as_labelled,
)
from .principles import prompt_text
from .reward_model import load_reward_model

__all__ = [
    "MAX_SIZE",
    "SELECTORS",
    "OnlineRewardModel",
    "bradley_terry_loss",
    "check_device",
    "check_label",
    "check_name",
    "group_pairs",
    "select_random",
    "select_uncertain",
]

logger = logging.getLogger(__name__)

# Settings kept on the objective as attributes of the same name (`rm.label_budget`, ...); the others are converted.
_NOT_ATTRIBUTES = ("seed_pairs", "device")


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
        **settings:
            The settings below, as keyword arguments: `OnlineRewardModelSettings` (`online_settings.py`) holds the
            default, the check and the documentation of each, and this list is made from it.
        <settings>
    """

    def __init__(self, model: Any, tokenizer: Any = None, labeler: Callable | None = None, **settings: Any):
        for key in settings:
            if key not in _SETTING_NAMES:
                import difflib

                close = difflib.get_close_matches(key, _SETTING_NAMES, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise TypeError(f"OnlineRewardModel() got an unexpected keyword argument {key!r}{hint}.")
        config = OnlineRewardModelSettings(**settings)
        if labeler is not None and not callable(labeler):
            raise TypeError(f"`labeler` must be a callable of the labeler protocol, got {type(labeler).__name__}.")
        for key in _SETTING_NAMES:
            if key not in _NOT_ATTRIBUTES:
                setattr(self, key, getattr(config, key))
        self.__name__ = self.name
        self.labeler = labeler
        self.required_columns: list = []
        self.needs_group = True  # GRPOExtTrainer calls it on the global batch with `num_generations`
        self._seed_pairs = seed_pairs_as_labelled(config.seed_pairs)

        self._model, self._tokenizer, self._model_name = load_reward_model(model, tokenizer)
        self._device = config.device if config.device is not None else next(self._model.parameters()).device
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
    def train_pairs(self, pairs: Sequence[Mapping[str, Any]], steps: int | None = None) -> float | None:
        """Train on labelled pairs now, outside GRPO: `steps` (default `update_steps`) optimizer steps, each on all
        of `pairs` (`{prompt, a, b, label[, margin]}`, as `pair_loss` takes them), with this model's AdamW, gradient
        clipping and error policy; the pairs do not enter the replay buffer and no label is counted. Returns the mean
        Bradley-Terry loss before the steps taken, or None when a non-finite step stopped it before any was taken.

        Use it to warm-start a reward model on offline pairs; minibatches and epochs are a loop over calls.

        Example:
        >>> import torch
        >>> from trl_grpo_ext.kit.tiny import build_tiny_reward_model, build_tiny_tokenizer
        >>> _ = torch.manual_seed(0)
        >>> tokenizer = build_tiny_tokenizer()
        >>> rm = OnlineRewardModel(build_tiny_reward_model(tokenizer), tokenizer, learning_rate=1e-3)
        >>> pairs = [{"prompt": "rev 12=", "a": "21", "b": "12", "label": 1.0}]
        >>> before = rm.pair_loss(pairs)
        >>> rm.train_pairs(pairs, steps=1) == before  # one step: the loss before it
        True
        >>> rm.train_pairs(pairs, steps=4) < before, rm.pair_loss(pairs) < before, rm.pair_accuracy(pairs)
        (True, True, 1.0)
        """
        if isinstance(steps, bool) or not (steps is None or (isinstance(steps, int) and steps >= 1)):
            raise ValueError(f"`steps` must be an integer >= 1 (or None for `update_steps`), got {steps!r}.")
        pairs = list(pairs)
        if not pairs:
            raise ValueError("`pairs` is empty: train_pairs needs at least one labelled pair.")
        return self._train(pairs, steps)[0]

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
        return {key: getattr(self, key) for key in OnlineRewardModelSettings.recorded()} | {
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
        save_atomically(directory, self._write_state)

    def _write_state(self, directory: Path) -> None:
        version, internal, gauss = self._rng.getstate()
        labeler_state = getattr(self.labeler, "state_dict", None)
        payload = {
            "counters": self._counters,
            "step": self._global_step,
            "frozen_logged": self._frozen_logged,
            "rng": [version, list(internal), gauss],
            "buffer": list(self._buffer),
            "heldout": list(self._heldout),
            "optimizer": None,  # the optimizer's state, filled in by `write_state`
            "labeler": labeler_state() if callable(labeler_state) else None,
            "settings": self.settings(),
        }
        write_state(directory, self._model, self._optimizer, payload)

    def load_state(self, directory: str | os.PathLike) -> None:
        """Read what `save_state` wrote."""
        payload = read_state(directory, self._model, self._optimizer, self._device)
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


_SETTING_NAMES = tuple(f.name for f in fields(OnlineRewardModelSettings))


def _signature() -> inspect.Signature:
    """`OnlineRewardModel.__init__`'s signature: model, tokenizer, labeler, then every setting as a keyword argument
    with its default (as `help()` and IDEs show it)."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [
        inspect.Parameter("self", kind),
        inspect.Parameter("model", kind, annotation="Any"),
        inspect.Parameter("tokenizer", kind, default=None, annotation="Any"),
        inspect.Parameter("labeler", kind, default=None, annotation="Callable | None"),
    ]
    for spec in fields(OnlineRewardModelSettings):
        default = spec.default if spec.default is not MISSING else spec.default_factory()
        params.append(
            inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=spec.type)
        )
    return inspect.Signature(params)


OnlineRewardModel.__init__.__signature__ = _signature()
OnlineRewardModel.__doc__ = OnlineRewardModel.__doc__.replace(
    "        <settings>\n", describe_settings(OnlineRewardModelSettings) + "\n"
)


def _labeler_spec(labeler: Any) -> str | None:
    """The labeler as a checkpoint records it: the repr of the package's labelers (a judge labeler with its questions),
    else the callable's qualified name; never an object's address, so an unchanged labeler compares equal.

    Example:
    ```python
    >>> from trl_grpo_ext.rewards import accuracy
    >>> _labeler_spec(GoldLabeler(accuracy)), _labeler_spec(check_label)
    ('GoldLabeler(accuracy)', 'trl_grpo_ext.rewards.bradley_terry.check_label')

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
    """`fn()` on process 0 only, its result (and `rng`'s state after it) handed to every process by accelerate's
    `broadcast_object_list`.

    Every process holds a copy of the reward model and makes the same update on the global batch; the labeler is
    asked once, on process 0: a judge endpoint is called once per pair, a queue file has one writer, and a labeler that
    answers differently on two calls (a timeout, a person) cannot make the copies diverge. An error on process 0 is
    raised on every process (an `ObjectiveError` as one, with its message), so none waits on a collective.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return fn()  # one process: no accelerate state needed (the objective also runs outside a trainer)
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    payload: list[Any] = [None]
    error: BaseException | None = None
    if PartialState().is_main_process:
        try:
            payload = [("ok", fn(), rng.getstate())]
        except Exception as exc:
            error = exc
            payload = [("error", isinstance(exc, ObjectiveError), f"{type(exc).__name__} on process 0: {exc}")]
    broadcast_object_list(payload, from_process=0)
    status, *rest = payload[0]
    if error is not None:
        raise error
    if status == "error":
        objective_error, message = rest
        raise (ObjectiveError if objective_error else RuntimeError)(message)
    result, state = rest
    rng.setstate(state)
    return result
