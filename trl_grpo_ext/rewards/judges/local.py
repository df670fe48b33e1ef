"""A local causal LM as the judge: loaded once per process and device, batched, under `torch.inference_mode()`.

The judge reads the next-token distribution after each prompt and returns P(yes) over its whole vocabulary (see
`base.py`). Prompts are left-padded with position ids from the attention mask, so a batched score equals the
unbatched one. The model is loaded on first use (a config or a dry run never loads it), on the device of this
process (`accelerate.PartialState().device`: the trainer's device), and shared by every `LocalJudge` of the process
that names the same model, device and dtype. Several training processes each hold one copy; to share one judge
between processes, serve it (`vllm serve`) and use `OpenAIJudge`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from .base import Judge, JudgeError, answer_of_token
from .config import LocalJudgeConfig

__all__ = ["LocalJudge"]

_LOADED: dict[tuple[str, str, str], tuple] = {}  # (model, device, dtype) -> (model, tokenizer, yes ids, no ids)
_LOAD_LOCK = threading.Lock()


def _yes_no_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """Token ids whose text is a prefix of "yes" / "no" (see `answer_of_token`), special tokens excluded."""
    special = set(tokenizer.all_special_ids)
    yes, no = [], []
    for token_id in range(len(tokenizer)):
        if token_id in special:
            continue
        answer = answer_of_token(tokenizer.decode([token_id]))
        if answer == "yes":
            yes.append(token_id)
        elif answer == "no":
            no.append(token_id)
    return yes, no


class LocalJudge(Judge):
    """A transformers causal LM that answers yes or no; `score(texts)` gives P(yes) per text.

    Args:
        model (`str`):
            A local path, a Hub id, or a tiny-kit name such as `"tiny:tiny"`.
        chat (`bool`, *optional*, defaults to `False`):
            Put each text in a user message and apply the tokenizer's chat template (with the generation prompt).
        batch_size (`int`, *optional*, defaults to `16`):
            Texts per forward pass.
        max_length (`int`, *optional*):
            Longer prompts keep their last `max_length` tokens (the question sits at the end). Unset: no truncation.
        device (`str`, *optional*):
            Where the judge runs; unset: this process's device (`accelerate.PartialState().device`).
        dtype (`str`, *optional*, defaults to `"auto"`):
            `"auto"` (the checkpoint's dtype), `"float32"`, `"bfloat16"` or `"float16"`.
        cache_size (`int`, *optional*, defaults to `65536`):
            Scores of identical texts kept in memory; 0 turns the cache off.

    Example:
    ```python
    >>> judge = LocalJudge("tiny:tiny", batch_size=4)
    >>> [0.0 < p < 1.0 for p in judge.score(["Is 2+2=4? Answer:", "Is the sky green? Answer:"])]
    [True, True]
    >>> judge.calls, judge.score(["Is 2+2=4? Answer:"]) == judge.score(["Is 2+2=4? Answer:"]), judge.calls
    (2, True, 2)

    ```
    """

    kind = "local"

    def __init__(
        self,
        model: str,
        chat: bool = LocalJudgeConfig.chat,
        batch_size: int = LocalJudgeConfig.batch_size,
        max_length: int | None = LocalJudgeConfig.max_length,
        device: str | None = LocalJudgeConfig.device,
        dtype: str = LocalJudgeConfig.dtype,
        cache_size: int = LocalJudgeConfig.cache_size,
    ):
        super().__init__(cache_size)
        self.model = model
        self.chat = chat
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.dtype = dtype

    def describe(self) -> str:
        return f"local judge {self.model!r}"

    def __repr__(self) -> str:
        return f"LocalJudge(model={self.model!r}, chat={self.chat}, batch_size={self.batch_size})"

    def _cache_key(self, text: str):
        return (text, self.chat, self.max_length)

    # ------------------------------------------------------------------------------------------------ loading
    def _device(self) -> str:
        if self.device is not None:
            return self.device
        from accelerate import PartialState

        return str(PartialState().device)

    def load(self):
        """(model, tokenizer, yes ids, no ids) of this process; loaded on the first call, then shared."""
        device = self._device()
        key = (self.model, device, self.dtype)
        with _LOAD_LOCK:
            if key not in _LOADED:
                _LOADED[key] = self._load(device)
            return _LOADED[key]

    def _load(self, device: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ...kit import resolve_model_path

        path = resolve_model_path(self.model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        dtype = self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        model.requires_grad_(False)
        yes, no = _yes_no_token_ids(tokenizer)
        if not yes or not no:
            raise JudgeError(
                f"The judge {self.model!r} has no token for {'yes' if not yes else 'no'} in its vocabulary (a token "
                "whose text is a prefix of the word); it cannot answer yes or no."
            )
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer, torch.tensor(yes, device=device), torch.tensor(no, device=device)

    # ------------------------------------------------------------------------------------------------ scoring
    def _prompts(self, tokenizer, texts: Sequence[str]) -> list[list[int]]:
        if self.chat:
            rendered = [
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
                )
                for text in texts
            ]
            ids = tokenizer(rendered, add_special_tokens=False).input_ids
        else:
            ids = tokenizer(list(texts)).input_ids
        if self.max_length is not None:
            ids = [row[-self.max_length :] for row in ids]
        return ids

    def _score_uncached(self, texts: Sequence[str]) -> list[float | JudgeError]:
        import torch

        model, tokenizer, yes_ids, no_ids = self.load()
        ids = self._prompts(tokenizer, texts)
        scores: list[float | JudgeError] = [JudgeError("not scored")] * len(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together: less padding
        pad = tokenizer.pad_token_id
        device = yes_ids.device
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(len(ids[i]) for i in rows)
            input_ids = torch.tensor([[pad] * (width - len(ids[i])) + ids[i] for i in rows], device=device)
            mask = torch.tensor([[0] * (width - len(ids[i])) + [1] * len(ids[i]) for i in rows], device=device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits[:, -1, :]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            # P(yes) = sigmoid(logsumexp over yes tokens - logsumexp over no tokens), see base.py.
            diff = torch.logsumexp(logprobs[:, yes_ids], dim=-1) - torch.logsumexp(logprobs[:, no_ids], dim=-1)
            for row, value in zip(rows, torch.sigmoid(diff).tolist()):
                scores[row] = value
        return scores
