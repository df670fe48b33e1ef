"""Built-in objectives. Each is an ordinary TRL reward function, `(prompts, completions, **kwargs) -> list[float | None]`.

Completions may be standard (`str`) or conversational (a list of `{"role", "content"}` messages, scored on the last
assistant message). `None` means "no reward for this completion", which TRL excludes from the weighted sum.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from trl.rewards import accuracy_reward, get_soft_overlong_punishment

__all__ = [
    "accuracy",
    "completion_text",
    "format_objective",
    "group_objective",
    "is_group_objective",
    "length_objective",
    "novelty",
    "readability",
]


def group_objective(fn: Callable) -> Callable:
    """Mark `fn` as a group objective: it scores a completion against the other completions of its prompt.

    A group objective is called with the whole global batch (all processes gathered, groups of `num_generations`
    contiguous rows) and the keyword argument `num_generations`; the trainer keeps its own slice of the rewards.

    Example:
    ```python
    >>> @group_objective
    ... def is_longest(prompts, completions, num_generations, **kwargs):
    ...     groups = [completions[i : i + num_generations] for i in range(0, len(completions), num_generations)]
    ...     return [float(len(c) == max(map(len, g))) for g in groups for c in g]
    >>> is_longest.needs_group
    True
    >>> is_longest(None, ["a", "abc", "ab", "a"], num_generations=2)
    [0.0, 1.0, 1.0, 0.0]

    ```
    """
    fn.needs_group = True
    return fn


def is_group_objective(fn: Any) -> bool:
    """Whether `fn` (or the function a `functools.partial` wraps) is marked with `needs_group = True`."""
    while isinstance(fn, functools.partial):
        if getattr(fn, "needs_group", False) is True:
            return True
        fn = fn.func
    return getattr(fn, "needs_group", False) is True


def completion_text(completion: str | Sequence[dict[str, Any]]) -> str:
    """The text of one completion: the string itself, or the content of the last assistant message.

    Example:
    ```python
    >>> completion_text([{"role": "assistant", "content": "Hi"}, {"role": "tool", "content": "x"}])
    'Hi'

    ```
    """
    if isinstance(completion, str):
        return completion
    messages = list(completion)
    assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
    if not assistant:
        return ""
    content = assistant[-1].get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # Multimodal content blocks: keep the text parts.
    return "".join(block.get("text", "") for block in content if isinstance(block, dict))


# ---------------------------------------------------------------------------------------------------------- accuracy

# A sign counts only where it cannot be a hyphen or a minus between operands ("5-10 minutes" ends with 10, not -10).
_NUMBER = r"(?:(?<![\w)\]])[-+])?(?:\d{1,3}(?:,\d{3})+(?![\d,])(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
_NUMBER_RE = re.compile(_NUMBER)
# A reference that is only a number, optionally with a currency sign, a percent sign or unit words: "60 mph", "$1,234".
_NUMERIC_REFERENCE_RE = re.compile(rf"^\s*\$?\s*({_NUMBER})\s*(?:%|[A-Za-z][A-Za-z/ ]*)?\s*\.?\s*$")
_BOXED_RE = re.compile(r"\\boxed\s*\{((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}")


def _to_float(number: str) -> float:
    return float(number.replace(",", ""))


def _reference_number(reference: str) -> float | None:
    match = _NUMERIC_REFERENCE_RE.match(reference.replace("\u2212", "-"))
    return _to_float(match.group(1)) if match else None


def _last_number(text: str) -> float | None:
    text = text.replace("\u2212", "-")
    boxed = _BOXED_RE.findall(text)
    numbers = _NUMBER_RE.findall(boxed[-1] if boxed else text)
    return _to_float(numbers[-1]) if numbers else None


def accuracy(prompts: list | None, completions: list, **kwargs) -> list[float | None]:
    r"""1.0 when the completion's final answer matches the reference answer, 0.0 when not, `None` when unknown.

    The reference is the dataset column `answer`, else `solution`. A GSM8K answer keeps only what follows its last
    `"####"`. Then:

    - a numeric reference (`"42"`, `"1,234"`, `"-3.5"`, `"60 mph"`, `"$12"`) is compared with the last number of the
      completion (of its last `\boxed{}` when it has one), with thousands separators dropped, up to 1e-9; a
      completion whose number differs but which has a `\boxed{}` gets a second chance through math-verify
      (`\boxed{\frac{120}{2}}` for `60`);
    - any other reference (LaTeX, fractions, expressions) goes to math-verify through `trl.rewards.accuracy_reward`,
      which returns `None` when the reference cannot be parsed.

    Args:
        prompts (`list` or `None`):
            Unused; part of the reward-function protocol.
        completions (`list[str]` or `list[list[dict]]`):
            Standard or conversational completions.
        **kwargs:
            Dataset columns; `answer` or `solution` (one per completion) is required.

    Returns:
        `list[float | None]`: one reward per completion.

    Example:
    ```python
    >>> completions = ["The speed is 60 mph.", "60 mph.", "The car goes 50 mph."]
    >>> accuracy(None, completions, answer=["60"] * 3)
    [1.0, 1.0, 0.0]
    >>> accuracy(None, [r"So the answer is \boxed{\frac{1}{3}}."], solution=[r"$\frac{1}{3}$"])
    [1.0]

    ```
    """
    references = kwargs.get("answer")
    if references is None:
        references = kwargs.get("solution")
    if references is None:
        raise ValueError(
            "The `accuracy` objective needs the reference answers in a dataset column `answer` or `solution`; "
            f"got the columns {sorted(k for k in kwargs if k not in ('completion_ids', 'trainer_state'))}."
        )
    if len(references) != len(completions):
        raise ValueError(f"`accuracy` got {len(references)} reference answers for {len(completions)} completions.")

    rewards: list[float | None] = [None] * len(completions)
    to_verify: list[int] = []  # rows that math-verify decides
    for i, (completion, reference) in enumerate(zip(completions, references)):
        reference = "" if reference is None else str(reference)
        if "####" in reference:
            reference = reference.rsplit("####", 1)[1]
        text = completion_text(completion)
        expected = _reference_number(reference)
        if expected is None:
            to_verify.append(i)
            continue
        got = _last_number(text)
        if got is not None and math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9):
            rewards[i] = 1.0
        elif "\\boxed" in text:
            to_verify.append(i)
        else:
            rewards[i] = 0.0

    if to_verify:
        references_to_verify = []
        for i in to_verify:
            reference = "" if references[i] is None else str(references[i])
            reference = reference.rsplit("####", 1)[1] if "####" in reference else reference
            references_to_verify.append(reference.strip())
        verified = accuracy_reward(
            [[{"role": "assistant", "content": completion_text(completions[i])}] for i in to_verify],
            references_to_verify,
        )
        for i, reward in zip(to_verify, verified):
            rewards[i] = reward
    return rewards


accuracy.required_columns = [("answer", "solution")]


# ------------------------------------------------------------------------------------------------------- readability

_FRE_BASE, _FRE_SENTENCE_LENGTH, _FRE_SYLLABLES_PER_WORD = 206.835, 1.015, 84.6  # textstat's English constants


@functools.lru_cache(maxsize=1)
def _hyphenator():
    from pyphen import Pyphen

    return Pyphen(lang="en_US")


def _flesch_reading_ease(text: str) -> float:
    # textstat's formula and word/sentence counts, with Pyphen syllable counts (textstat's fallback for words outside
    # NLTK's cmudict): textstat's default counter downloads cmudict on first use, which fails on offline machines, and
    # a reward must not depend on what a machine could download.
    from textstat.backend import counts, selections

    words = selections.list_words(text, lowercase=True)
    sentences = counts.count_sentences(text)
    if not words or not sentences:
        return 0.0
    syllables = sum(len(_hyphenator().positions(word)) + 1 for word in words)
    return _FRE_BASE - _FRE_SENTENCE_LENGTH * len(words) / sentences - _FRE_SYLLABLES_PER_WORD * syllables / len(words)


def readability(prompts: list | None, completions: list, **kwargs) -> list[float]:
    r"""Flesch reading ease of each completion, clipped to [0, 100] and divided by 100: 1.0 reads easily, 0.0 hardly.

    $$\mathrm{FRE} = 206.835 - 1.015\,\frac{\text{words}}{\text{sentences}} - 84.6\,\frac{\text{syllables}}{\text{words}}$$

    Words and sentences are counted by textstat, syllables by Pyphen's `en_US` hyphenation (textstat's own fallback;
    textstat's cmudict lookup needs a download, so scores can differ by a few points from
    `textstat.flesch_reading_ease` on a machine that has cmudict). A completion without words scores 0.0.

    Args:
        prompts (`list` or `None`):
            Unused; part of the reward-function protocol.
        completions (`list[str]` or `list[list[dict]]`):
            Standard or conversational completions.
        **kwargs:
            Unused.

    Returns:
        `list[float]`: one reward in [0, 1] per completion.

    Example:
    ```python
    >>> completions = [
    ...     "The speed is 60 mph.",
    ...     "To compute the average speed, divide the total distance by the elapsed time.",
    ...     "Average velocity is determined by dividing displacement by elapsed duration.",
    ...     "",
    ... ]
    >>> [round(r, 4) for r in readability(None, completions)]
    [1.0, 0.6999, 0.0211, 0.0]

    ```
    """
    scores = []
    for completion in completions:
        score = _flesch_reading_ease(completion_text(completion))
        scores.append(min(max(score, 0.0), 100.0) / 100.0)
    return scores


# ----------------------------------------------------------------------------------------------------------- novelty

_WORD_RE = re.compile(r"\w+")


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _jaccard(a: list[str], b: list[str], n: int) -> float:
    n = min(n, len(a), len(b))  # short texts fall back to shorter n-grams, down to unigrams
    if n == 0:
        return 0.0
    grams_a, grams_b = _ngrams(a, n), _ngrams(b, n)
    return len(grams_a & grams_b) / len(grams_a | grams_b)


@group_objective
def novelty(
    prompts: list | None,
    completions: list,
    num_generations: int | None = None,
    novelty_ngram: int = 3,
    **kwargs,
) -> list[float]:
    r"""How different each completion is from the other completions of its prompt: 1 - max word-n-gram Jaccard.

    $$\mathrm{novelty}(y_i) = 1 - \max_{j \ne i,\ j \in G(i)} \frac{|N(y_i) \cap N(y_j)|}{|N(y_i) \cup N(y_j)|}$$

    where $N(y)$ is the set of word n-grams of $y$ (lower-cased `\w+` runs; punctuation ignored) and $G(i)$ the
    group of $y_i$: the block of `num_generations` contiguous completions that holds it. When either text of a pair
    has fewer than `n` words, that pair uses n-grams of the shorter length (down to unigrams). A completion without
    words scores 0.0 (it says nothing new); a completion alone in its group scores 1.0.

    A group objective (`needs_group = True`): the trainer calls it on the whole global batch.

    Args:
        prompts (`list` or `None`):
            Unused; part of the reward-function protocol.
        completions (`list[str]` or `list[list[dict]]`):
            Standard or conversational completions, groups of `num_generations` contiguous rows.
        num_generations (`int`):
            Group size. Required; must divide `len(completions)`.
        novelty_ngram (`int`, *optional*, defaults to `3`):
            Word n-gram size `n`.
        **kwargs:
            Unused.

    Returns:
        `list[float]`: one reward in [0, 1] per completion.

    Example:
    ```python
    >>> novelty(None, ["the cat sat down", "the cat sat", "dogs bark", "Dogs bark!"], num_generations=2)
    [0.5, 0.5, 0.0, 0.0]
    >>> novelty(None, ["Yes.", "Yes, indeed!", "", "Maybe."], num_generations=4)  # short texts: unigrams
    [0.5, 0.5, 0.0, 1.0]

    ```
    """
    if num_generations is None:
        raise ValueError(
            "The `novelty` objective compares the completions of one prompt, so it needs `num_generations` (the group "
            "size). GRPOExtTrainer passes it; with plain trl.GRPOTrainer bind it, e.g. "
            "functools.partial(novelty, num_generations=8), and make sure each process holds whole groups."
        )
    if isinstance(num_generations, bool) or not isinstance(num_generations, int) or num_generations < 1:
        raise ValueError(f"`num_generations` must be an integer >= 1, got {num_generations!r}.")
    if len(completions) % num_generations != 0:
        raise ValueError(
            f"`novelty` got {len(completions)} completions, which is not a whole number of groups of "
            f"num_generations={num_generations}."
        )
    if isinstance(novelty_ngram, bool) or not isinstance(novelty_ngram, int) or novelty_ngram < 1:
        raise ValueError(f"`novelty_ngram` must be an integer >= 1, got {novelty_ngram!r}.")

    words = [_WORD_RE.findall(completion_text(c).lower()) for c in completions]
    rewards = []
    for i, own in enumerate(words):
        start = i - i % num_generations
        others = [words[j] for j in range(start, start + num_generations) if j != i]
        if not own:
            rewards.append(0.0)
        elif not others:
            rewards.append(1.0)
        else:
            rewards.append(1.0 - max(_jaccard(own, other, novelty_ngram) for other in others))
    return rewards


# ------------------------------------------------------------------------------------------------- format and length

THINK_ANSWER_PATTERN = r"^\s*<think>(?!.*<think>).*?</think>\s*<answer>(?!.*<answer>).*?</answer>\s*$"


class _FormatObjective:
    # A callable class rather than a closure so the objective stays picklable (TRL's async rollout worker pickles
    # reward functions).
    def __init__(self, pattern: str, name: str):
        self.pattern = pattern
        self.__name__ = name
        self._regex = re.compile(pattern, re.DOTALL)

    def __call__(self, prompts: list | None, completions: list, **kwargs) -> list[float]:
        return [1.0 if self._regex.match(completion_text(c)) else 0.0 for c in completions]

    def __getstate__(self):
        return {"pattern": self.pattern, "__name__": self.__name__}

    def __setstate__(self, state):
        self.__init__(state["pattern"], state["__name__"])


def format_objective(pattern: str = THINK_ANSWER_PATTERN, name: str = "format") -> Callable:
    r"""A reward of 1.0 for completions that match the regular expression `pattern` (`re.DOTALL`), else 0.0.

    The default pattern wants one `<think>...</think>` block followed by one `<answer>...</answer>` block and
    nothing else (surrounding whitespace allowed); it is the registered `"format"` objective.

    Args:
        pattern (`str`, *optional*, defaults to `THINK_ANSWER_PATTERN`):
            Regular expression matched (`re.match`) against the completion text.
        name (`str`, *optional*, defaults to `"format"`):
            The objective's `__name__`.

    Returns:
        `Callable`: a reward function.

    Example:
    ```python
    >>> fmt = format_objective()
    >>> fmt(None, ["<think>60 = 120 / 2</think> <answer>60</answer>", "<answer>60</answer>"])
    [1.0, 0.0]
    >>> format_objective(r"^<answer>\d+</answer>$")(None, ["<answer>60</answer>"])
    [1.0]

    ```
    """
    return _FormatObjective(pattern, name)


class _LengthObjective:
    # A callable class for picklability, like TRL's own `_SoftOverlongPunishment` which it wraps.
    def __init__(self, max_completion_len: int, soft_punish_cache: int, name: str):
        self.max_completion_len = max_completion_len
        self.soft_punish_cache = soft_punish_cache
        self.__name__ = name
        self._punishment = get_soft_overlong_punishment(max_completion_len, soft_punish_cache)

    def __call__(self, prompts: list | None, completions: list, completion_ids: list | None = None, **kwargs):
        if completion_ids is None:
            raise ValueError(
                f"The `{self.__name__}` objective counts tokens, so it needs `completion_ids` (TRL passes them)."
            )
        return self._punishment(completion_ids)

    def __getstate__(self):
        return {
            "max_completion_len": self.max_completion_len,
            "soft_punish_cache": self.soft_punish_cache,
            "__name__": self.__name__,
        }

    def __setstate__(self, state):
        self.__init__(state["max_completion_len"], state["soft_punish_cache"], state["__name__"])


def length_objective(max_completion_len: int = 512, soft_punish_cache: int = 128, name: str = "length") -> Callable:
    r"""DAPO's soft overlong punishment on the completion's token count `L` (wraps TRL's `get_soft_overlong_punishment`).

    0.0 up to `max_completion_len - soft_punish_cache` tokens, then falls linearly to -1.0 at `max_completion_len`,
    and stays -1.0 beyond. Needs the `completion_ids` TRL passes. The registered `"length"` objective uses the
    defaults: 512 (TRL's default `max_completion_length`) and a cache of 128 tokens; build your own to match your
    `max_completion_length`.

    Args:
        max_completion_len (`int`, *optional*, defaults to `512`):
            Length (tokens) from which the reward is -1.0.
        soft_punish_cache (`int`, *optional*, defaults to `128`):
            Width (tokens) of the linear ramp below `max_completion_len`.
        name (`str`, *optional*, defaults to `"length"`):
            The objective's `__name__`.

    Returns:
        `Callable`: a reward function.

    Example:
    ```python
    >>> length = length_objective(max_completion_len=100, soft_punish_cache=20)
    >>> length(None, ["a", "b", "c"], completion_ids=[[1] * 80, [1] * 90, [1] * 120])
    [0.0, -0.5, -1.0]

    ```
    """
    if max_completion_len < 1 or not 0 <= soft_punish_cache <= max_completion_len:
        raise ValueError(
            "`max_completion_len` must be >= 1 and `soft_punish_cache` in [0, max_completion_len], got "
            f"max_completion_len={max_completion_len}, soft_punish_cache={soft_punish_cache}."
        )
    return _LengthObjective(max_completion_len, soft_punish_cache, name)
