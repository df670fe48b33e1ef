"""Offline generated tasks with exactly checked answers: the demo's and the tiny recipe's training data.

`arithmetic_dataset` writes additions of a one-digit number and a number of one or two digits, in either order
("47+8=" -> "55", "3+61=" -> "64"). Every problem belongs to exactly one split, decided by a hash of its text, so the
held-out splits never share a problem with `train`:

    train 80 % | validation 10 % (for tuning) | test 10 % (held out, reported)

The 1,900 distinct problems give about 1,520 training, 190 validation and 190 test problems: a ~1 M-parameter
character-level model learns the carries in a few minutes on a CPU, and it must learn to add rather than memorise to
answer the held-out ones. (Two two-digit operands take it far longer than a demo can wait.)

Example:
    >>> ds = arithmetic_dataset(3, seed=0)
    >>> ds.column_names
    ['prompt', 'answer']
    >>> row = ds[0]
    >>> a, b = row["prompt"].rstrip("=").split("+")
    >>> int(a) + int(b) == int(row["answer"])
    True
    >>> is_correct(" 46", "46"), is_correct("46 ", "46"), is_correct("4 6", "46"), is_correct("046", "46")
    (True, True, False, False)
"""

from __future__ import annotations

import hashlib
import random
from functools import cache

from datasets import Dataset

SPLITS = ("train", "validation", "test")
_SPLIT_BOUNDS = {"train": (0, 80), "validation": (80, 90), "test": (90, 100)}  # percent of the hash buckets
_SPLIT_ALIASES = {"heldout": "test", "held-out": "test", "val": "validation", "eval": "validation"}
MAX_OPERAND = 99  # the larger operand has one or two digits
MAX_SMALL_OPERAND = 9  # the other has one digit


def problem_split(prompt: str) -> str:
    """The split a problem belongs to: a stable hash of its text (the same on every machine and Python run).

    Example:
        >>> problem_split("12+34=")
        'train'
    """
    bucket = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big") % 100
    return next(name for name, (low, high) in _SPLIT_BOUNDS.items() if low <= bucket < high)


@cache
def _problems(split: str) -> tuple[tuple[str, str], ...]:
    """All (prompt, answer) pairs of a split, in a fixed order."""
    pairs = {}
    for large in range(MAX_OPERAND + 1):
        for small in range(MAX_SMALL_OPERAND + 1):
            for a, b in ((large, small), (small, large)):
                prompt = f"{a}+{b}="
                if problem_split(prompt) == split:
                    pairs[prompt] = str(a + b)
    return tuple(sorted(pairs.items()))


def num_problems(split: str) -> int:
    """How many distinct problems a split holds (train 1,5xx; validation and test ~190 each)."""
    return len(_problems(_check_split(split)))


def _check_split(split: str) -> str:
    split = _SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {list(SPLITS)} (or 'heldout'), got {split!r}.")
    return split


def arithmetic_dataset(num_examples: int, seed: int, split: str = "train") -> Dataset:
    """
    `num_examples` additions "a+b=" of one split, with columns `prompt` and `answer` (both `str`).

    One operand is in [0, 9], the other in [0, 99]. Problems are drawn without replacement while the split has enough
    of them (`num_problems(split)`), then the split is cycled in a fresh shuffled order. The same `(num_examples, seed, split)` always
    gives the same dataset.

    Args:
        num_examples (`int`):
            Number of rows, >= 1.
        seed (`int`):
            Seed of the draw.
        split (`str`, *optional*, defaults to `"train"`):
            `"train"`, `"validation"` (to tune on) or `"test"` (held out; alias `"heldout"`).

    Returns:
        `datasets.Dataset`: columns `prompt` (e.g. `"47+8="`) and `answer` (e.g. `"55"`).

    Example:
        >>> arithmetic_dataset(2, seed=1, split="test")["prompt"] == arithmetic_dataset(2, seed=1, split="test")["prompt"]
        True
    """
    split = _check_split(split)
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"`num_examples` should be a positive integer, got {num_examples!r}.")
    pool = list(_problems(split))
    rng = random.Random(f"{split}-{seed}")
    rows: list[tuple[str, str]] = []
    while len(rows) < num_examples:
        rng.shuffle(pool)
        rows.extend(pool[: num_examples - len(rows)])
    return Dataset.from_dict({"prompt": [p for p, _ in rows], "answer": [a for _, a in rows]})


def is_correct(completion: str, answer: str) -> bool:
    """Whether a completion is exactly the answer, surrounding whitespace aside (no extra text, no leading zeros).

    Example:
        >>> is_correct("46", "46"), is_correct("46 is it", "46"), is_correct("45", "46")
        (True, False, False)
    """
    return completion.strip() == answer.strip()


def exact_match_reward(completions: list, answer: list[str], **kwargs) -> list[float]:
    """
    1.0 for a completion that `is_correct` for its `answer`, else 0.0 (TRL's reward-function protocol).

    Args:
        completions (`list[str]` or `list[list[dict]]`):
            Completions, plain text or conversational (the last message's content is checked).
        answer (`list[str]`):
            The dataset column `answer`, one per completion.

    Example:
        >>> exact_match_reward(["46", " 46", "4 6"], answer=["46", "46", "46"])
        [1.0, 1.0, 0.0]
    """
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [float(is_correct(text, ans)) for text, ans in zip(texts, answer)]


def digit_match_reward(completions: list, answer: list[str], **kwargs) -> list[float]:
    """
    Partial credit: the fraction of digit positions, aligned on the right, where a completion agrees with its `answer`.

    Positions are counted over the longer of the two strings, so a missing or an extra character costs its share:
    "57" for "55" gets 1/2 (the tens digit is right), "155" gets 2/3, "5" gets 1/2. It rewards each digit of a sum
    on its own, where the exact match rewards only the whole: a denser signal for GRPO while the units digit or the
    carry is still mostly wrong.

    Args:
        completions (`list[str]` or `list[list[dict]]`):
            Completions, plain text or conversational (the last message's content is checked).
        answer (`list[str]`):
            The dataset column `answer`, one per completion.

    Example:
        >>> digit_match_reward(["55", "57", "155", "5", "x"], answer=["55"] * 5)
        [1.0, 0.5, 0.6666666666666666, 0.5, 0.0]
    """
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    rewards = []
    for text, ans in zip(texts, answer):
        text, ans = text.strip(), ans.strip()
        width = max(len(text), len(ans), 1)
        matches = sum(a == b for a, b in zip(reversed(text), reversed(ans)))
        rewards.append(matches / width)
    return rewards
