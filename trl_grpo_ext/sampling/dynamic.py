r"""Dynamic sampling (DAPO): groups whose rewards are all equal are replaced by groups of new prompts.

A group of K completions whose rewards are all equal has zero advantage under every estimator: it gives no gradient.
After TRL scores a generation batch of G groups, `fill_batch` marks each group *teaching* or not (`teaching_groups`:
its rewards are measured and not all equal), and while some slot holds a group that does not teach and fewer than
`max_rounds` extra rounds were spent, it draws G new prompts (`RefillSampler`), has TRL generate and score them
(`score_round`: the trainer's own `_generate_and_score_completions`, called again), and puts the new teaching groups
into the empty slots in order. Slots still empty after the last round keep their tied group (zero advantage: no
gradient, and `skip_zero_advantage` skips its compute). Extra teaching groups beyond the empty slots are dropped.

Every decision is taken on the global batch (TRL gathers the rewards of every process), so every process generates
the same number of rounds; the new prompts are the same global list on every process (the sampler's state is the
same everywhere), each process generating its own slice of it, exactly as TRL's sampler lays out a batch (groups of K
contiguous rows over the processes, so a group may straddle two). The final batch is assembled from the gathered
rounds on global row positions: process p keeps global rows p*B .. p*B+B-1.

What changes against TRL: which groups are trained on, not how (each round's advantages are TRL's, or the
configured estimator's, computed within that round); the loss normaliser `num_items_in_batch` is recounted over the
final batch. TRL's metrics and completions table describe every round generated.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from ..advantages import weighted_rewards

# Keys of TRL's `_generate_and_score_completions` output, by how a row of each is padded when rounds are merged.
LEFT_PADDED = {"prompt_ids": "pad", "prompt_mask": 0}  # prompts are left-padded
RIGHT_PADDED = {
    "completion_ids": "pad",
    "completion_mask": 0,
    "tool_mask": 1,  # TRL pads it with 1 (the completion mask is 0 there)
    "old_per_token_logps": 0.0,
    "sampling_per_token_logps": 0.0,
    "ref_per_token_logps": 0.0,
    "importance_sampling_ratio": 1.0,
}
PER_ROW = ("advantages",)  # one value per row; more can be named by the caller (the ladder's row temperatures)
RECOUNTED = "num_items_in_batch"  # the loss normaliser: recounted over the final batch


def tied_groups(
    rewards_per_func: torch.Tensor, reward_weights: torch.Tensor, num_generations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""(tied, measured), one boolean per group of K contiguous rows: are the group's weighted rewards all equal?

    measured: at least two completions of the group have a reward (so it has a spread); tied: measured and its highest
    and lowest weighted reward are equal (`torch.isclose(max, min)`). A group that is not measured is not tied.

    TRL's `frac_reward_zero_std` tests `torch.isclose(std, 0)` instead, an absolute test (atol 1e-8) on a number whose
    float32 rounding grows with the reward: eight equal rewards of 0.8 have a std of 6.4e-8, so TRL counts a group
    tied at 0.2, 0.3, 0.7 or 0.8 (0.8 x accuracy + 0.2 x format, say) as one that teaches, and gives it advantages of
    rounding noise (below 1e-3). This test counts it as tied; TRL's metric is logged unchanged.

    Args:
        rewards_per_func (`torch.Tensor` of shape `(G * K, F)`):
            Rewards of the global batch (as gathered by TRL's `_calculate_rewards`), groups of K contiguous.
        reward_weights (`torch.Tensor` of shape `(F,)`):
            Weight of each reward function.
        num_generations (`int`):
            Group size K.

    Example:
    >>> nan = float("nan")
    >>> rewards = torch.tensor([[1.0], [1.0], [0.0], [1.0], [1.0], [nan]])  # tied / teaches / one reward left
    >>> tied, measured = tied_groups(rewards, torch.tensor([1.0]), num_generations=2)
    >>> tied.tolist(), measured.tolist()
    ([True, False, False], [True, True, False])
    >>> right_but_verbose = torch.tensor([[1.0, 0.0]] * 8)  # accuracy 1, format 0: 0.8 each
    >>> tied_groups(right_but_verbose, torch.tensor([0.8, 0.2]), num_generations=8)[0].tolist()
    [True]
    >>> from trl.trainer.utils import nanstd
    >>> std = nanstd(weighted_rewards(right_but_verbose, torch.tensor([0.8, 0.2])).view(1, 8), dim=1)
    >>> torch.isclose(std, torch.zeros(1)).tolist()  # TRL's test: not tied
    [False]
    """
    rows = rewards_per_func.size(0)
    if num_generations < 1 or rows == 0 or rows % num_generations:
        raise ValueError(
            f"`rewards_per_func` must hold whole groups of num_generations={num_generations}, got {rows} rows."
        )
    rewards = weighted_rewards(rewards_per_func, reward_weights).view(-1, num_generations)
    measured = (~torch.isnan(rewards)).sum(dim=1) >= 2
    if num_generations == 1:
        return torch.zeros_like(measured), measured
    highest = rewards.nan_to_num(nan=-math.inf).amax(dim=1)
    lowest = rewards.nan_to_num(nan=math.inf).amin(dim=1)
    tied = measured & torch.isclose(highest, lowest)
    return tied, measured


def teaching_groups(
    rewards_per_func: torch.Tensor, reward_weights: torch.Tensor, num_generations: int
) -> torch.Tensor:
    r"""One boolean per group: its rewards are measured and not all equal, so its advantages are not all zero.

    Example:
    >>> teaching_groups(torch.tensor([[1.0], [1.0], [0.0], [1.0]]), torch.tensor([1.0]), 2).tolist()
    [False, True]
    """
    tied, measured = tied_groups(rewards_per_func, reward_weights, num_generations)
    return measured & ~tied


def tie_ends(
    rewards_per_func: torch.Tensor, reward_weights: torch.Tensor, num_generations: int
) -> tuple[float, float]:
    r"""Fractions of the groups tied at the top and at the bottom of the batch's reward range: (too easy, too hard).

    A tied group sits at the top when its common reward is the batch's highest weighted reward, at the bottom when it
    is the lowest (`torch.isclose`). A batch whose rewards all have one value has no range: its tied groups count in
    neither (0.0, 0.0). Fractions of all G groups, as TRL's `frac_reward_zero_std`, so top + bottom <= that fraction.

    Example:
    >>> rewards = torch.tensor([[1.0], [1.0], [0.0], [0.0], [0.5], [0.5], [0.0], [1.0]])  # top, bottom, middle, -
    >>> tie_ends(rewards, torch.tensor([1.0]), num_generations=2)
    (0.25, 0.25)
    """
    tied, _ = tied_groups(rewards_per_func, reward_weights, num_generations)
    rewards = weighted_rewards(rewards_per_func, reward_weights)
    scored = rewards[~torch.isnan(rewards)]
    if scored.numel() == 0:
        return 0.0, 0.0
    high, low = scored.max(), scored.min()
    if torch.isclose(high, low):
        return 0.0, 0.0
    value = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    top = tied & torch.isclose(value, high.expand_as(value))
    bottom = tied & torch.isclose(value, low.expand_as(value))
    groups = tied.numel()
    return top.sum().item() / groups, bottom.sum().item() / groups


def fill_slots(empty: list[int], teaching: Sequence[bool], round_index: int, slots: list[tuple[int, int]]) -> int:
    r"""Put round `round_index`'s teaching groups into the `empty` slots, first come first served; returns how many.

    `slots[s]` is (round, group) of the group in slot s; `empty` lists the slots whose group does not teach, in order,
    and is consumed.

    Example:
    >>> slots, empty = [(0, 0), (0, 1), (0, 2)], [0, 2]
    >>> fill_slots(empty, [False, True, True, True], 1, slots), slots, empty
    (2, [(1, 1), (0, 1), (1, 2)], [])
    """
    placed = 0
    for group, teaches in enumerate(teaching):
        if not empty:
            break
        if teaches:
            slots[empty.pop(0)] = (round_index, group)
            placed += 1
    return placed


def local_rows(indices: Sequence[int], num_generations: int, process_index: int, rows_per_process: int) -> list[int]:
    r"""The dataset rows process `process_index` generates for the global prompt list `indices`, as TRL lays out a
    batch: every prompt repeated K times contiguously, process p taking global rows p*B .. p*B+B-1.

    Example:
    >>> local_rows([7, 3, 5], num_generations=2, process_index=1, rows_per_process=3)
    [3, 5, 5]
    """
    rows = [index for index in indices for _ in range(num_generations)]
    start = process_index * rows_per_process
    if start + rows_per_process > len(rows):
        raise ValueError(f"{len(indices)} prompts x {num_generations} do not cover process {process_index}'s rows.")
    return rows[start : start + rows_per_process]


def row_sources(slots: Sequence[tuple[int, int]], num_generations: int) -> list[tuple[int, int]]:
    r"""(round, row of that round's global batch) of every global row of the final batch, slot by slot.

    Example:
    >>> row_sources([(1, 2), (0, 0)], num_generations=2)
    [(1, 4), (1, 5), (0, 0), (0, 1)]
    """
    return [(source, group * num_generations + i) for source, group in slots for i in range(num_generations)]


def gather_batch(output: dict[str, Any], accelerator, pad_token_id: int, per_row: Sequence[str] = ()) -> dict:
    """This process's rows of a round (TRL's `_generate_and_score_completions` output) -> the global batch's, on
    every process: each tensor padded to the widest process's width (`accelerator.pad_across_processes`) and
    gathered. `num_items_in_batch` is global already and kept as it is."""
    gathered = {}
    for key, value in output.items():
        if key in LEFT_PADDED or key in RIGHT_PADDED:
            left = key in LEFT_PADDED
            fill = (LEFT_PADDED if left else RIGHT_PADDED)[key]
            fill = pad_token_id if fill == "pad" else fill
            value = accelerator.pad_across_processes(value, dim=1, pad_index=fill, pad_first=left)
        elif key == RECOUNTED:
            gathered[key] = value
            continue
        elif key not in PER_ROW and key not in per_row:
            raise RuntimeError(
                f"dynamic_sampling does not know how to merge `{key}` of TRL's batch (text-only batches are supported)."
            )
        gathered[key] = accelerator.gather(value)
    return gathered


def pad_to(tensor: torch.Tensor, width: int, value, left: bool) -> torch.Tensor:
    r"""`tensor` (rows, w, ...) padded with `value` to (rows, width, ...), on the left or the right.

    Example:
    >>> pad_to(torch.tensor([[1, 2]]), 4, 0, left=True).tolist(), pad_to(torch.tensor([[1, 2]]), 3, 9, left=False).tolist()
    ([[0, 0, 1, 2]], [[1, 2, 9]])
    """
    missing = width - tensor.size(1)
    if missing < 0:
        raise ValueError(f"cannot pad a width of {tensor.size(1)} to {width}")
    if missing == 0:
        return tensor
    filler = tensor.new_full((tensor.size(0), missing, *tensor.shape[2:]), value)
    return torch.cat([filler, tensor] if left else [tensor, filler], dim=1)


def merge_rows(
    rounds: Sequence[dict[str, torch.Tensor]],
    picks: Sequence[tuple[int, int]],
    pad_token_id: int,
    per_row: Sequence[str] = (),
) -> dict:
    r"""The batch whose row i is row `picks[i][1]` of round `picks[i][0]`: each round's tensors padded to the widest.

    Prompts are padded on the left, completions and per-token values on the right (`LEFT_PADDED`, `RIGHT_PADDED`:
    masks with 0, ids with `pad_token_id`); `PER_ROW` keys and `per_row` have one value per row. Every round must hold
    the same keys; a key this module does not know is an error (no silent drop).

    Example:
    >>> a = {"prompt_ids": torch.tensor([[5, 6]]), "completion_ids": torch.tensor([[7]]), "advantages": torch.tensor([1.0])}
    >>> b = {"prompt_ids": torch.tensor([[4]]), "completion_ids": torch.tensor([[8, 9]]), "advantages": torch.tensor([-1.0])}
    >>> merged = merge_rows([a, b], [(1, 0), (0, 0)], pad_token_id=0)
    >>> merged["prompt_ids"].tolist(), merged["completion_ids"].tolist(), merged["advantages"].tolist()
    ([[0, 4], [5, 6]], [[8, 9], [7, 0]], [-1.0, 1.0])
    """
    keys = set(rounds[0])
    for number, batch in enumerate(rounds):
        if set(batch) != keys:
            raise RuntimeError(f"round {number} has keys {sorted(batch)}, round 0 has {sorted(keys)}")
    merged = {}
    for key in sorted(keys):
        if key in LEFT_PADDED or key in RIGHT_PADDED:
            left = key in LEFT_PADDED
            value = (LEFT_PADDED if left else RIGHT_PADDED)[key]
            value = pad_token_id if value == "pad" else value
            tensors = [batch[key] for batch in rounds]
            width = max(t.size(1) for t in tensors)
            tensors = [pad_to(t, width, value, left) for t in tensors]
        elif key in PER_ROW or key in per_row:
            tensors = [batch[key] for batch in rounds]
        else:
            raise RuntimeError(
                f"dynamic_sampling does not know how to merge `{key}` of TRL's batch (text-only batches are supported)."
            )
        merged[key] = (
            torch.stack([tensors[round_index][row] for round_index, row in picks]) if picks else tensors[0][:0]
        )
    return merged


class RefillSampler(TrainerCallback, ExportableState):
    r"""The order in which dynamic sampling draws new prompts: a seeded permutation of the training set, epoch after
    epoch, the same on every process. Its position is checkpointed (`stateful_callbacks`), so a resumed run draws what
    the uninterrupted run would have.

    Args:
        dataset_size (`int`):
            Number of rows of the training set (>= 1).
        seed (`int`):
            Seed of the permutations (epoch e uses `random.Random(f"refill-{seed}-{e}")`: independent of TRL's own
            prompt order, which is torch's `randperm` with the same seed).

    Example:
    >>> sampler = RefillSampler(dataset_size=5, seed=0)
    >>> first, second = sampler.draw(3), sampler.draw(3)  # the second draw crosses into epoch 1
    >>> sorted(first + second[:2]), sampler.epoch, sampler.position
    ([0, 1, 2, 3, 4], 1, 1)
    """

    def __init__(self, dataset_size: int, seed: int):
        if isinstance(dataset_size, bool) or not isinstance(dataset_size, int) or dataset_size < 1:
            raise ValueError(f"`dataset_size` must be a positive integer, got {dataset_size!r}.")
        self.dataset_size, self.seed = dataset_size, int(seed)
        self.epoch, self.position = 0, 0
        self.drawn = 0

    def _order(self, epoch: int) -> list[int]:
        order = list(range(self.dataset_size))
        random.Random(f"refill-{self.seed}-{epoch}").shuffle(order)
        return order

    def draw(self, count: int) -> list[int]:
        """The next `count` dataset indices (an epoch that runs out continues with the next permutation)."""
        indices: list[int] = []
        while len(indices) < count:
            order = self._order(self.epoch)
            take = order[self.position : self.position + count - len(indices)]
            indices += take
            self.position += len(take)
            if self.position == self.dataset_size:
                self.epoch, self.position = self.epoch + 1, 0
        self.drawn += count
        return indices

    def settings(self) -> dict:
        return {"dataset_size": self.dataset_size, "seed": self.seed}

    def state(self) -> dict:
        return {
            "args": self.settings(),
            "attributes": {"epoch": self.epoch, "position": self.position, "drawn": self.drawn},
        }

    def on_train_begin(self, args, state, control, **kwargs):
        """Continue from a resumed checkpoint's position (same training set and seed), else from this object's."""
        name = type(self).__name__
        saved = state.stateful_callbacks.get(name)
        if isinstance(saved, list):
            saved = saved[0] if saved else None
        if not saved:  # a fresh run, or a checkpoint written without dynamic sampling
            state.stateful_callbacks[name] = self.state()
            return
        if saved.get("args") != self.settings():
            warnings.warn(
                f"{name}: the checkpoint's prompt order was drawn for {saved.get('args')}, this run has "
                f"{self.settings()}: dynamic sampling starts its own order from the beginning.",
                UserWarning,
                stacklevel=2,
            )
            return
        for attribute, value in saved.get("attributes", {}).items():
            setattr(self, attribute, value)


def check_dynamic_sampling(train_dataset, multimodal: bool) -> None:
    """What `dynamic_sampling=True` needs of the trainer (the config checks its own fields): a map-style training set
    it can draw rows from, and a text-only model."""
    if train_dataset is None:
        raise ValueError(
            "`dynamic_sampling=True` draws new prompts from the training set; no `train_dataset` was given."
        )
    if not (hasattr(train_dataset, "__len__") and hasattr(train_dataset, "__getitem__")):
        raise ValueError(
            f"`dynamic_sampling=True` draws new prompts by index; the training set is a {type(train_dataset).__name__}"
            " (an iterable dataset has none). Use a map-style dataset, or leave dynamic_sampling off."
        )
    if len(train_dataset) == 0:
        raise ValueError("`dynamic_sampling=True` needs a non-empty training set.")
    if multimodal:
        raise ValueError("`dynamic_sampling=True` merges text-only batches; this model takes multimodal inputs.")


def fill_batch(
    first: dict[str, Any],
    first_rewards: torch.Tensor,
    score_round: Callable[[list[dict]], tuple[dict[str, Any], torch.Tensor]],
    *,
    is_teaching: Callable[[torch.Tensor], torch.Tensor],
    draw_inputs: Callable[[int], list[dict]],
    gather: Callable[[dict[str, Any]], dict[str, torch.Tensor]],
    process_index: int,
    num_generations: int,
    max_rounds: int,
    pad_token_id: int,
    per_row: Sequence[str] = (),
) -> tuple[dict[str, Any], dict[str, float]]:
    r"""The batch of generation round 0 (`first`, with its gathered `first_rewards`) with its groups that do not teach
    replaced by teaching groups of up to `max_rounds` more rounds. See the module docstring.

    Args:
        score_round: `inputs -> (output, gathered rewards_per_func)` for this process's rows of a new round.
        is_teaching: `rewards_per_func (G * K, F) -> bool (G,)`.
        draw_inputs: `number of groups -> this process's input rows` (the same global prompt list on every process).
        gather: a round's output (this process's rows) -> the global batch's, every tensor padded to one width.

    Returns:
        (the batch, this process's rows; the statistics: rounds, groups generated, groups kept that teach, groups).
        With every group of round 0 teaching, `first` itself, untouched.
    """
    teaching = is_teaching(first_rewards).tolist()
    groups = len(teaching)
    empty = [slot for slot, teaches in enumerate(teaching) if not teaches]
    stats = {"rounds": 1, "groups": groups, "groups_generated": groups, "teaching": groups - len(empty)}
    if not empty:
        return first, stats
    rows_per_process = first["advantages"].size(0)
    rounds = [gather(first)]
    slots = [(0, group) for group in range(groups)]
    for round_index in range(1, max_rounds + 1):
        output, rewards = score_round(draw_inputs(groups))
        rounds.append(gather(output))
        stats["rounds"] += 1
        stats["groups_generated"] += groups
        stats["teaching"] += fill_slots(empty, is_teaching(rewards).tolist(), round_index, slots)
        if not empty:
            break
    every_row = row_sources(slots, num_generations)
    start = process_index * rows_per_process
    picks = every_row[start : start + rows_per_process]
    keys = [key for key in rounds[0] if key != RECOUNTED]
    merged = merge_rows([{key: batch[key] for key in keys} for batch in rounds], picks, pad_token_id, per_row)
    device = first["advantages"].device
    merged = {key: value.to(device) for key, value in merged.items()}
    masks = [key for key in ("completion_mask", "tool_mask") if key in rounds[0]]
    whole = merge_rows([{key: batch[key] for key in masks} for batch in rounds], every_row, pad_token_id)
    loss_mask = whole["completion_mask"] * whole["tool_mask"] if "tool_mask" in whole else whole["completion_mask"]
    merged[RECOUNTED] = loss_mask.sum().to(first[RECOUNTED].device, first[RECOUNTED].dtype)
    return merged, stats
