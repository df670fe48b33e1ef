"""Dataset presets: turn a raw dataset into the `prompt` + `answer` columns GRPO and our objectives read.

A recipe names a preset with `dataset_preset`, so it needs no user code:

| preset          | source                                   | prompt from                    | answer from                     |
|-----------------|------------------------------------------|--------------------------------|---------------------------------|
| `gsm8k`         | `openai/gsm8k`, config `main`            | `question`                     | the number after `####`         |
| `prompt_answer` | any dataset (`dataset_name` or mixture)  | `prompt_column`                | `answer_column`                 |
| `arithmetic`    | `trl_grpo_ext.kit.tasks`, generated offline | `prompt`                    | `answer`                        |
| `chat_addition` | `trl_grpo_ext.kit.tasks`, generated offline | `prompt` (one user message) | `answer`                        |

With `conversational=True` (the default) a text prompt becomes `[{"role": "system", ...}, {"role": "user", ...}]`, so
TRL applies the model's chat template; with `conversational=False` it stays text, prefixed by the system prompt if one
is set. A prompt that is already a conversation keeps its messages; a system prompt is added only if it has none.

Example:
    >>> from datasets import Dataset
    >>> raw = Dataset.from_list([{"question": "2+3?", "answer": "2+3=5\\n#### 5"}])
    >>> row = apply_preset(raw, "gsm8k", system_prompt="Be brief.")[0]
    >>> row["prompt"], row["answer"]
    ([{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': '2+3?'}], '5')
"""

from __future__ import annotations

import re
from typing import Any

from datasets import Dataset, DatasetDict, IterableDataset

from ..kit import tasks

DATASET_PRESETS = ("gsm8k", "prompt_answer", "arithmetic", "chat_addition")
GENERATED_PRESETS = ("arithmetic", "chat_addition")  # made offline by `generated_splits`, no dataset to load
GSM8K_DATASET = ("openai/gsm8k", "main")

_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


def gsm8k_final_answer(solution: str) -> str:
    """The number after `####` in a GSM8K solution, without thousands separators.

    Args:
        solution (`str`):
            A GSM8K `answer` field: the worked solution, then `#### <number>`.

    Returns:
        `str`: the final answer.

    Example:
    >>> gsm8k_final_answer("48 / 2 = 24 clips\\n#### 1,024")
    '1024'
    """
    match = _GSM8K_ANSWER.search(solution)
    if match is None:
        raise ValueError(f"A GSM8K answer must end with '#### <number>', got {solution[-80:]!r}.")
    return match.group(1).replace(",", "").strip()


def format_prompt(prompt: Any, system_prompt: str | None = None, conversational: bool = True) -> Any:
    """A prompt in the form TRL expects: a list of chat messages, or plain text.

    Args:
        prompt (`str` or `list[dict]`):
            The user's text, or a conversation (kept as is).
        system_prompt (`str`, *optional*):
            Instruction given before the prompt: a `system` message, or a text prefix when not conversational.
        conversational (`bool`, *optional*, defaults to `True`):
            Whether a text prompt becomes chat messages.

    Returns:
        `list[dict]` or `str`: the prompt.

    Example:
    >>> format_prompt("1+1=", "Answer with a number.", conversational=False)
    'Answer with a number.\\n1+1='
    >>> format_prompt([{"role": "user", "content": "1+1="}], "Answer with a number.")
    [{'role': 'system', 'content': 'Answer with a number.'}, {'role': 'user', 'content': '1+1='}]
    """
    if isinstance(prompt, list):
        if system_prompt and not any(message.get("role") == "system" for message in prompt):
            return [{"role": "system", "content": system_prompt}, *prompt]
        return prompt
    if not isinstance(prompt, str):
        raise ValueError(f"A prompt must be a string or a list of chat messages, got {type(prompt).__name__}.")
    if not conversational:
        return f"{system_prompt}\n{prompt}" if system_prompt else prompt
    messages = [{"role": "user", "content": prompt}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def apply_preset(
    dataset: Dataset | IterableDataset,
    preset: str,
    *,
    system_prompt: str | None = None,
    conversational: bool = True,
    prompt_column: str = "prompt",
    answer_column: str = "answer",
) -> Dataset | IterableDataset:
    """Map one split to the columns `prompt` and `answer` (other columns are kept; GSM8K's worked solution is kept
    as `solution`).

    Args:
        dataset (`Dataset` or `IterableDataset`):
            One split of the raw dataset.
        preset (`str`):
            One of `DATASET_PRESETS`.
        system_prompt (`str`, *optional*):
            See `format_prompt`.
        conversational (`bool`, *optional*, defaults to `True`):
            See `format_prompt`.
        prompt_column (`str`, *optional*, defaults to `"prompt"`):
            Column holding the prompt (`prompt_answer` preset).
        answer_column (`str`, *optional*, defaults to `"answer"`):
            Column holding the reference answer (`prompt_answer` preset); answers are turned into strings.

    Returns:
        The mapped split.
    """
    if preset not in DATASET_PRESETS:
        raise ValueError(f"`dataset_preset` must be one of {list(DATASET_PRESETS)}, got {preset!r}.")
    if preset == "gsm8k":
        _require_columns(dataset, preset, ["question", "answer"])

        def to_row(example):
            return {
                "prompt": format_prompt(example["question"], system_prompt, conversational),
                "answer": gsm8k_final_answer(example["answer"]),
                "solution": example["answer"],
            }

        return dataset.map(to_row, remove_columns=["question"])

    if preset in GENERATED_PRESETS:
        prompt_column, answer_column = "prompt", "answer"
    _require_columns(dataset, preset, [prompt_column, answer_column])

    def to_prompt_answer(example):
        return {
            "prompt": format_prompt(example[prompt_column], system_prompt, conversational),
            "answer": str(example[answer_column]),
        }

    renamed = {prompt_column, answer_column} - {"prompt", "answer"}
    return dataset.map(to_prompt_answer, remove_columns=sorted(renamed) or None)


def generated_splits(preset: str, num_examples: int, seed: int, with_test: bool) -> DatasetDict:
    """An offline task of `trl_grpo_ext.kit.tasks` (`arithmetic` or `chat_addition`): a `train` split of
    `num_examples` rows (and a `test` split of a quarter of that if asked)."""
    make = {"arithmetic": tasks.arithmetic_dataset, "chat_addition": tasks.chat_addition_dataset}[preset]
    splits = {"train": make(num_examples=num_examples, seed=seed, split="train")}
    if with_test:
        splits["test"] = make(num_examples=max(num_examples // 4, 1), seed=seed, split="test")
    return DatasetDict(splits)


def _require_columns(dataset, preset: str, columns: list[str]) -> None:
    names = dataset.column_names
    if names is None:  # a streaming dataset whose features are unknown until it is read
        return
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(
            f"The `{preset}` dataset preset needs the columns {columns}, but the dataset has {names}; missing: "
            f"{missing}. Set `prompt_column` / `answer_column` (prompt_answer preset) or pick another preset."
        )
