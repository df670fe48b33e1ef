"""Offline generated tasks with exactly checked answers: the demo's and the tiny recipe's training data.

Two tasks, each with disjoint splits decided by a hash of the problem text (`problem_split`), so a held-out problem is
never a training problem:

    train 80 % | validation 10 % (for tuning) | test 10 % (held out, reported)

- `arithmetic_dataset`: additions of a one-digit number and a number of one or two digits, in either order
  ("47+8=" -> "55", "3+61=" -> "64"); 1,900 distinct problems, about 1,520 / 190 / 190 per split. The `arithmetic`
  dataset preset of the CLI uses it. (Two two-digit operands take a ~1 M-parameter model far longer to learn than a
  demo can wait.)
- `reversal_dataset`: reverse a string of 3 to 7 digits 1-9 ("rev 58213=" -> "31285"); millions of problems. The
  demo uses it: its errors are near misses that GRPO corrects within minutes on a CPU (see `trl_grpo_ext.demos.tiny`).

Both answers are numbers written with digits only, so the `accuracy` objective (last number of the completion) and
the exact check `is_correct` agree on a completion that is only digits.

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
        >>> problem_split("3+61="), problem_split("47+8="), problem_split("rev 98765=")
        ('train', 'test', 'validation')
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


REVERSAL_DIGITS = "123456789"  # no zero: a reversed string never starts with 0, so numeric and exact checks agree
REVERSAL_PREFIX = "rev "


def reversal_dataset(
    num_examples: int, seed: int, split: str = "train", min_length: int = 3, max_length: int = 7
) -> Dataset:
    """
    `num_examples` digit-reversal problems ("rev 58213=" -> "31285") of one split, columns `prompt` and `answer`.

    Each string has a uniformly drawn length in [`min_length`, `max_length`] and digits 1-9 (so the answer is also a
    number: the `accuracy` objective and `is_correct` agree). Problems are split by the same hash as
    `arithmetic_dataset`, so no held-out problem is ever a training problem; the rows of one dataset are distinct.

    Args:
        num_examples (`int`):
            Number of rows, >= 1.
        seed (`int`):
            Seed of the draw.
        split (`str`, *optional*, defaults to `"train"`):
            `"train"`, `"validation"` or `"test"` (alias `"heldout"`).
        min_length (`int`, *optional*, defaults to 3), max_length (`int`, *optional*, defaults to 7):
            Length range of the strings.

    Returns:
        `datasets.Dataset`: columns `prompt` and `answer` (both `str`).

    Example:
        >>> row = reversal_dataset(1, seed=0)[0]
        >>> row["prompt"][len(REVERSAL_PREFIX) : -1][::-1] == row["answer"]
        True
    """
    split = _check_split(split)
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"`num_examples` should be a positive integer, got {num_examples!r}.")
    if not 1 <= min_length <= max_length:
        raise ValueError(
            f"`min_length` and `max_length` should satisfy 1 <= min <= max, got {min_length}, {max_length}."
        )
    rng = random.Random(f"reversal-{split}-{seed}")
    available = sum(len(REVERSAL_DIGITS) ** n for n in range(min_length, max_length + 1))
    if num_examples > available // 20:  # a split holds >= 10 % of the strings; stay well below that
        raise ValueError(f"`num_examples` should be at most {available // 20} for these lengths, got {num_examples}.")
    rows: dict[str, str] = {}
    while len(rows) < num_examples:
        digits = "".join(rng.choice(REVERSAL_DIGITS) for _ in range(rng.randint(min_length, max_length)))
        prompt = f"{REVERSAL_PREFIX}{digits}="
        if prompt not in rows and problem_split(prompt) == split:
            rows[prompt] = digits[::-1]
    return Dataset.from_dict({"prompt": list(rows), "answer": list(rows.values())})


CHAT_ADDITION_QUESTION = "What is {a} + {b}? Reply with just the number."


@cache
def _chat_addition_problems(split: str) -> tuple[tuple[int, int], ...]:
    """All (a, b) pairs of two-digit operands whose question falls in `split`, in a fixed order."""
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    return tuple(p for p in pairs if problem_split(CHAT_ADDITION_QUESTION.format(a=p[0], b=p[1])) == split)


def chat_addition_dataset(num_examples: int, seed: int, split: str = "train") -> Dataset:
    """
    `num_examples` distinct two-digit additions asked in chat form, for an instruct model (the real-model demo's task).

    The prompt is one user message, "What is 23 + 45? Reply with just the number."; the model's chat template adds
    its system prompt. Of the 8,100 problems (both operands in [10, 99]) a split holds its hash share (train 6,567,
    validation 781, test 752), split by the question's text as for the other tasks.

    Args:
        num_examples (`int`):
            Number of rows, >= 1 and at most the split's size.
        seed (`int`):
            Seed of the draw.
        split (`str`, *optional*, defaults to `"train"`):
            `"train"`, `"validation"` or `"test"` (alias `"heldout"`).

    Returns:
        `datasets.Dataset`: columns `prompt` (a list with one user message) and `answer` (the sum, e.g. `"68"`).

    Example:
        >>> row = chat_addition_dataset(1, seed=0, split="test")[0]
        >>> question = row["prompt"][0]["content"]
        >>> a, b = (int(word.rstrip("?")) for word in question.split()[2:5:2])
        >>> str(a + b) == row["answer"], row["prompt"][0]["role"]
        (True, 'user')
    """
    split = _check_split(split)
    pool = list(_chat_addition_problems(split))
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or not 1 <= num_examples <= len(pool):
        raise ValueError(
            f"`num_examples` should be an integer in [1, {len(pool)}] for split {split!r}, got {num_examples!r}."
        )
    random.Random(f"chat-addition-{split}-{seed}").shuffle(pool)
    rows = pool[:num_examples]
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": CHAT_ADDITION_QUESTION.format(a=a, b=b)}] for a, b in rows],
            "answer": [str(a + b) for a, b in rows],
        }
    )
