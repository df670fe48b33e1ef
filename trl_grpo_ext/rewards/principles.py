r"""The `principles` objective: plain-language principles, each judged by a model, in place of a learned reward.

For completion $y$ of prompt $x$ and principles $q_1, \dots, q_m$ with weights $w_j \ge 0$:

$$r(x, y) = \frac{\sum_j w_j\, P_{\text{judge}}(\text{yes} \mid \text{template}(x, y, q_j))}{\sum_j w_j} \in [0, 1]$$

where $P_{\text{judge}}(\text{yes})$ is the judge's next-token probability of "yes" normalised over yes and no
(`trl_grpo_ext.rewards.judges`). A completion for which any principle could not be judged (endpoint down, garbage,
an answer that is neither yes nor no) has no score: the objective raises `PartialRewardsError`, and the trainer's
`reward_error_policy` decides (`raise`: stop, naming the objective, the principle, the completion and the cause;
`skip`: `None` for those completions, counted in `rewards/{name}/errors`). Never a silent 0.

Every call logs, through TRL's `log_metric`: `rewards/{name}/{principle}/mean` (mean P(yes) per principle),
`rewards/{name}/judge_calls` (texts sent to the judge model, cache misses), `rewards/{name}/judge_cache_hits`,
`rewards/{name}/judge_retries` (HTTP retries) and `rewards/{name}/judge_seconds` (wall time of the judge).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..checks import Number, check_not_all_zero
from .configured import ConfiguredObjective
from .guard import PartialRewardsError
from .judges import DEFAULT_TEMPLATE, Judge, build_judge, check_template
from .objectives import completion_text

__all__ = ["Principle", "PrinciplesObjective", "check_principles", "principles", "prompt_text"]

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Principle:
    """One principle: a yes/no `question` about the response, its `weight` (>= 0) and a `name` for metrics."""

    question: str
    weight: float = 1.0
    name: str = ""


def _slug(question: str) -> str:
    words = re.findall(r"[a-z0-9]+", question.lower())
    return "_".join(words)[:40].rstrip("_") or "principle"


def check_principles(value: Any, field: str = "principles") -> list[Principle]:
    """Principles from a list of questions, `{question, weight, name}` mappings or `Principle`s, validated.

    A missing name is the question's first words in snake case; names must be unique.

    Example:
    ```python
    >>> check_principles(["Is it polite?", {"question": "Is it true?", "weight": 3, "name": "honest"}])
    [Principle(question='Is it polite?', weight=1.0, name='is_it_polite'), Principle(question='Is it true?', weight=3.0, name='honest')]

    ```
    """
    if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence) or not value:
        raise ValueError(
            f"`{field}` must be a non-empty list of questions (strings) or {{question, weight, name}} mappings, got "
            f"{value!r}."
        )
    out = []
    for index, entry in enumerate(value):
        where = f"`{field}[{index}]`"
        if isinstance(entry, Principle):
            entry = asdict(entry)
        if isinstance(entry, str):
            entry = {"question": entry}
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be a question or a {{question, weight, name}} mapping, got {entry!r}.")
        unknown = sorted(set(entry) - {"question", "weight", "name"})
        if unknown:
            raise ValueError(f"{where} has unknown keys {unknown}; allowed: ['question', 'weight', 'name'].")
        question = entry.get("question")
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{where}.question must be a non-empty string, got {question!r}.")
        weight = Number(0)(entry.get("weight", 1.0), f"{field}[{index}].weight")
        name = entry.get("name") or _slug(question)
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(
                f"{where}.name must be letters, digits, '_', '.' or '-' (it names metrics), got {name!r}."
            )
        out.append(Principle(question.strip(), weight, name))
    names = [p.name for p in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"`{field}` names must be unique, got {duplicates} more than once; set `name` explicitly.")
    check_not_all_zero([p.weight for p in out], field, what="principle weights")
    return out


def prompt_text(prompt: Any) -> str:
    """The prompt as text for the judge: a string as is, a conversation as `role: content` lines.

    Example:
    ```python
    >>> prompt_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}])
    'system: Be brief.\\nuser: 2+2?'

    ```
    """
    if prompt is None:
        return ""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m.get('role', 'user')}: {completion_text([{'content': m.get('content')}])}" for m in prompt)


class PrinciplesObjective:
    """A TRL reward function: the weighted mean over principles of the judge's P(yes), in [0, 1].

    Args:
        principles (`list`):
            Questions, `{question, weight, name}` mappings or `Principle`s (see `check_principles`).
        judge (`Judge` or `Mapping`):
            A `LocalJudge`, an `OpenAIJudge`, or a `judge` config block (`check_judge_config`).
        template (`str`, *optional*):
            The judge prompt, a format string with `{prompt}`, `{completion}` and `{principle}`; defaults to
            `judges.DEFAULT_TEMPLATE` (or the block's `template`).
        name (`str`, *optional*, defaults to `"principles"`):
            The objective's name, which prefixes its metrics: use the key it has in the `WeightedReward`.

    Example:
    ```python
    >>> from trl_grpo_ext.rewards.judges import LocalJudge
    >>> objective = PrinciplesObjective(["Is the answer a number?"], judge=LocalJudge("tiny:tiny"))
    >>> [0.0 < r < 1.0 for r in objective(prompts=["2+2="], completions=["4"])]
    [True]

    ```
    """

    def __init__(
        self,
        principles: Sequence[Any],
        judge: Judge | Mapping[str, Any],
        template: str | None = None,
        name: str = "principles",
    ):
        self.principles = check_principles(principles)
        if isinstance(judge, Mapping):
            template = template if template is not None else judge.get("template")
            judge = build_judge(judge)
        if not isinstance(judge, Judge):
            raise TypeError(f"`judge` must be a Judge or a judge config mapping, got {type(judge).__name__}.")
        self.judge = judge
        self.template = check_template(template if template is not None else DEFAULT_TEMPLATE)
        self.name = name
        self.__name__ = name
        self.required_columns: list = []

    def __repr__(self) -> str:
        return f"PrinciplesObjective({[p.question for p in self.principles]!r}, judge={self.judge!r})"

    def __call__(self, prompts=None, completions=None, log_metric=None, **kwargs) -> list[float | None]:
        n = len(completions)
        prompts = list(prompts) if prompts is not None else [None] * n
        texts = [
            self.template.format(
                prompt=prompt_text(prompt), completion=completion_text(completion), principle=p.question
            )
            for prompt, completion in zip(prompts, completions)
            for p in self.principles
        ]
        before = (self.judge.calls, self.judge.cache_hits, self.judge.retries)
        start = time.perf_counter()
        try:
            scores = self.judge.score(texts)
        except Exception as err:  # the judge itself broke (model load, OOM, ...): every completion fails
            scores = [err] * len(texts)
        seconds = time.perf_counter() - start

        m = len(self.principles)
        total_weight = sum(p.weight for p in self.principles)
        rewards: list[float | None] = []
        failures = []  # (completion index, principle, error)
        per_principle: list[list[float]] = [[] for _ in self.principles]
        for i in range(n):
            row = scores[i * m : (i + 1) * m]
            failed = [(j, s) for j, s in enumerate(row) if isinstance(s, Exception)]
            for j, s in enumerate(row):
                if not isinstance(s, Exception):
                    per_principle[j].append(s)
            if failed:
                failures.extend((i, self.principles[j], err) for j, err in failed)
                rewards.append(None)
            else:
                rewards.append(sum(p.weight * s for p, s in zip(self.principles, row)) / total_weight)

        if callable(log_metric):
            calls, hits, retries = (
                now - then for now, then in zip((self.judge.calls, self.judge.cache_hits, self.judge.retries), before)
            )
            log_metric(f"rewards/{self.name}/judge_calls", float(calls))
            log_metric(f"rewards/{self.name}/judge_cache_hits", float(hits))
            log_metric(f"rewards/{self.name}/judge_retries", float(retries))
            log_metric(f"rewards/{self.name}/judge_seconds", seconds)
            for principle, values in zip(self.principles, per_principle):
                if values:
                    log_metric(f"rewards/{self.name}/{principle.name}/mean", sum(values) / len(values))

        if failures:
            index, principle, error = failures[0]
            failed_rows = sorted({i for i, _, _ in failures})
            more = len(failures) - 1
            raise PartialRewardsError(
                f"principle {principle.name!r} ({principle.question!r}) at completion index {index}: "
                f"{type(error).__name__}: {error}"
                + (f" (and {more} more failed (completion, principle) pair(s))" if more else ""),
                rewards=rewards,
                failed=failed_rows,
            ) from (error if isinstance(error, BaseException) else None)
        return rewards


principles = ConfiguredObjective(
    "principles",
    fields=("principles", "judge"),
    build=lambda name, principles, judge: PrinciplesObjective(principles, judge, name=name),
    message="The `principles` objective needs principles and a judge: set `principles` and `judge` in the config (see "
    "docs/objectives.md), or use PrinciplesObjective(principles, judge) in Python.",
    module=__name__,
)
"""The registered `principles` objective: `weighted_reward_from_spec` (and so `reward_objectives`) builds a
`PrinciplesObjective` of the `principles` and `judge` fields in its place; called unbuilt it raises."""
