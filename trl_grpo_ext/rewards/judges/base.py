r"""What every judge shares: the yes-probability, the strict parse, the cache of identical requests and the counters.

A judge answers one question per text, "does the response satisfy the principle?", with a number in [0, 1]:

$$P(\text{yes}) = \frac{\sum_{t \in Y} p(t)}{\sum_{t \in Y} p(t) + \sum_{t \in N} p(t)}
               = \sigma\Big(\operatorname{logsumexp}_{t \in Y} \log p(t) - \operatorname{logsumexp}_{t \in N} \log p(t)\Big)$$

over the judge's *next-token* distribution p after the prompt, where Y (N) holds the tokens whose text, stripped of
white space and lower-cased, is a non-empty prefix of "yes" ("no"): `" Yes"`, `"yes"`, `"Y"`, `"y"`, `"ye"`, ... and
`" No"`, `"no"`, `"N"`, `"n"`. So the score is calibrated by the judge itself and no free text is parsed. The local
judge sums over its whole vocabulary; an endpoint returns its top-k log-probs, and tokens outside the top k count as 0.

Without log-probs (an endpoint that returns none, or whose top k holds no yes/no token) the answer text is parsed
strictly: stripped of white space and of one trailing `.` or `!`, it must be `yes` or `no` in any case (1.0 or 0.0);
anything else is a `JudgeError`, never a silent 0.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Iterable, Mapping, Sequence

from ...checks import Integer
from .config import JudgeConfig

__all__ = ["Judge", "JudgeError", "answer_of_token", "parse_yes_no", "yes_probability"]


class JudgeError(RuntimeError):
    """A judge could not score a text: the endpoint is down, slow, answered garbage, or the answer is not yes/no."""


def answer_of_token(token: str) -> str | None:
    """`"yes"` or `"no"` when the token's text (stripped, lower-cased) is a non-empty prefix of that word, else None.

    Example:
    ```python
    >>> [answer_of_token(t) for t in [" Yes", "y", "NO", " n", "Maybe", " ", "yes."]]
    ['yes', 'yes', 'no', 'no', None, None, None]

    ```
    """
    text = token.strip().lower()
    if not text:
        return None
    if "yes".startswith(text):
        return "yes"
    if "no".startswith(text):
        return "no"
    return None


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def yes_probability(logprobs: Mapping[str, float] | Iterable[tuple[str, float]]) -> float | None:
    r"""P(yes) normalised over the yes/no tokens of a next-token distribution, or None when it has none of them.

    $P = \sigma(\operatorname{logsumexp}_{Y} - \operatorname{logsumexp}_{N})$; only yes tokens give 1.0, only no
    tokens 0.0.

    Args:
        logprobs (`Mapping[str, float]` or iterable of `(token, logprob)`):
            Natural-log probabilities of next tokens (all of them, or an endpoint's top k). Pairs may repeat a token
            text (two token ids that decode alike); each counts.

    Example:
    ```python
    >>> import math
    >>> round(yes_probability({" Yes": math.log(0.6), " No": math.log(0.2), "Maybe": math.log(0.2)}), 12)
    0.75
    >>> round(yes_probability([("Y", math.log(0.3)), ("y", math.log(0.3)), ("n", math.log(0.2))]), 12)
    0.75
    >>> yes_probability({"Maybe": -0.1}) is None
    True

    ```
    """
    pairs = logprobs.items() if isinstance(logprobs, Mapping) else logprobs
    buckets: dict[str, list[float]] = {"yes": [], "no": []}
    for token, logprob in pairs:
        answer = answer_of_token(str(token))
        if answer is not None and logprob is not None and not math.isnan(float(logprob)):
            buckets[answer].append(float(logprob))
    if not buckets["yes"] and not buckets["no"]:
        return None
    lse_yes = _logsumexp(buckets["yes"]) if buckets["yes"] else -math.inf
    lse_no = _logsumexp(buckets["no"]) if buckets["no"] else -math.inf
    if lse_yes == lse_no == -math.inf:
        return None
    if lse_no == -math.inf:
        return 1.0
    diff = lse_yes - lse_no
    # A numerically stable logistic sigmoid.
    return 1.0 / (1.0 + math.exp(-diff)) if diff >= 0 else math.exp(diff) / (1.0 + math.exp(diff))


def parse_yes_no(text: str) -> float | None:
    """The strict parse: 1.0 for "yes", 0.0 for "no" (any case, white space and one trailing `.`/`!` ignored).

    Example:
    ```python
    >>> [parse_yes_no(t) for t in [" Yes", "no.", "NO!", "Yes, it does", "maybe", ""]]
    [1.0, 0.0, 0.0, None, None, None]

    ```
    """
    answer = text.strip()
    if answer[-1:] in (".", "!"):
        answer = answer[:-1].rstrip()
    return {"yes": 1.0, "no": 0.0}.get(answer.lower())


class Judge:
    """Base of the judges: `score(texts)` gives one P(yes) or one `JudgeError` per text.

    Subclasses implement `_score_uncached(texts)` and `_cache_key(text)` (everything that makes the request: the
    text, the model and the sampling settings). Successful scores are kept in an in-memory LRU cache of `cache_size`
    entries (0 turns it off), so an identical request is answered without calling the model; errors are not cached,
    and a score that is not a number in [0, 1] (NaN from a broken model) is an error.

    The counters `calls` (texts sent to the model), `cache_hits` and `retries` only grow; read their change over a
    `score` call. A judge is shared across threads: the cache and the counters are locked.
    """

    kind = "judge"

    def __init__(self, cache_size: int = JudgeConfig.cache_size):
        self.cache_size = Integer(0)(cache_size, "judge.cache_size")
        self._init_state()

    def _init_state(self) -> None:
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self.calls = 0
        self.cache_hits = 0
        self.retries = 0

    def _cache_key(self, text: str):
        raise NotImplementedError

    def _score_uncached(self, texts: Sequence[str]) -> list[float | JudgeError]:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for logs and error messages (never a secret)."""
        return self.kind

    def score(self, texts: Sequence[str]) -> list[float | JudgeError]:
        """P(yes) in [0, 1] for each text, or the `JudgeError` that explains why that text has no score."""
        results: list[float | JudgeError | None] = [None] * len(texts)
        keys = [self._cache_key(text) for text in texts]
        missing: dict = {}  # key -> indices asking for it (identical texts in one call are sent once)
        with self._lock:
            for index, key in enumerate(keys):
                if key in self._cache:
                    self._cache.move_to_end(key)
                    results[index] = self._cache[key]
                    self.cache_hits += 1
                elif key in missing:
                    missing[key].append(index)
                    self.cache_hits += 1
                else:
                    missing[key] = [index]
        if missing:
            first = [indices[0] for indices in missing.values()]
            scores = self._score_uncached([texts[i] for i in first])
            if len(scores) != len(first):
                raise RuntimeError(f"{type(self).__name__} returned {len(scores)} scores for {len(first)} texts.")
            with self._lock:
                self.calls += len(first)
                for (key, indices), score in zip(missing.items(), scores):
                    if not isinstance(score, Exception) and not 0.0 <= score <= 1.0:  # NaN too
                        score = JudgeError(f"{self.describe()} gave {score!r}, which is not a probability in [0, 1]")
                    for index in indices:
                        results[index] = score
                    if not isinstance(score, Exception) and self.cache_size:
                        self._cache[key] = score
                        if len(self._cache) > self.cache_size:
                            self._cache.popitem(last=False)
        return results  # type: ignore[return-value]

    def __getstate__(self):
        # Reward functions are pickled by TRL's async rollout worker: ship the settings, not the loaded state.
        state = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        for counter in ("calls", "cache_hits", "retries"):
            state.pop(counter, None)
        return state

    def __setstate__(self, state):
        vars(self).update(state)
        self._init_state()
