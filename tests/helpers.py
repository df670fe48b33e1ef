"""Small builders shared by the tests: a prompt dataset, a deterministic reward, a tiny-run config."""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

from datasets import Dataset

from trl_grpo_ext import GRPOExtConfig
from trl_grpo_ext.kit.tiny import build_tiny_model, build_tiny_tokenizer

TIMING_KEYS = ("step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos")


@functools.lru_cache(maxsize=1)
def tiny_tokenizer_cached():
    return build_tiny_tokenizer()


def tiny_model(seed: int = 0, size: str = "tiny"):
    return build_tiny_model(tiny_tokenizer_cached(), size=size, seed=seed)


def prompt_dataset(n: int = 16, conversational: bool = False) -> Dataset:
    rows = []
    for i in range(n):
        a, b = i % 7 + 1, (3 * i) % 5 + 2
        prompt = f"{a}+{b}="
        rows.append(
            {"prompt": [{"role": "user", "content": prompt}] if conversational else prompt, "answer": str(a + b)}
        )
    return Dataset.from_list(rows)


def digit_reward(completions, **kwargs):
    """Fraction of digit characters in the completion: cheap, deterministic and varied on a random model."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def length_reward(completions, **kwargs):
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [len(t) / 10.0 for t in texts]


def tiny_kwargs(output_dir, **overrides) -> dict:
    """Keyword arguments of a 3-step CPU run on the tiny kit; valid for trl.GRPOConfig and GRPOExtConfig."""
    kwargs = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=3,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,  # TRL defaults to bf16 autocast, on CPU too; the tiny runs check numbers in fp32
        seed=7,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return kwargs


def tiny_args(output_dir, **overrides) -> GRPOExtConfig:
    return GRPOExtConfig(**tiny_kwargs(output_dir, **overrides))


def numeric_log_history(log_history):
    """Every numeric log entry, keyed by (index, name), timing entries excluded."""
    out = {}
    for i, entry in enumerate(log_history):
        for key, value in entry.items():
            if isinstance(value, (int, float)) and not any(t in key for t in TIMING_KEYS):
                out[(i, key)] = value
    return out


def assert_logs_match(expected, actual, atol: float = 1e-6) -> None:
    """Every numeric entry of `expected` is in `actual` and agrees to `atol` (NaN equals NaN)."""
    exp, act = numeric_log_history(expected), numeric_log_history(actual)
    missing = sorted(set(exp) - set(act))
    assert not missing, f"entries missing from the extension's log_history: {missing}"
    bad = {
        k: (exp[k], act[k])
        for k in exp
        if not (math.isnan(exp[k]) and math.isnan(act[k])) and abs(exp[k] - act[k]) > atol
    }
    assert not bad, f"log_history differs: {bad}"


def centred_estimator(rewards, group_size):
    """A user estimator for the import-path test: r - mean of the group (NaN rows -> 0)."""
    import torch

    grouped = rewards.view(-1, group_size)
    centred = grouped - torch.nanmean(grouped, dim=1, keepdim=True)
    return torch.nan_to_num(centred.view(-1), nan=0.0)


_DEFAULT_REWARDS = object()


def build_trainer(tmp_path, reward_funcs=_DEFAULT_REWARDS, trainer_cls=None, dataset=None, model=None, **overrides):
    """A GRPOExtTrainer (or `trainer_cls`) on the saved tiny model with the tiny-run config."""
    from trl_grpo_ext import GRPOExtTrainer
    from trl_grpo_ext.kit import resolve_model_path

    trainer_cls = trainer_cls or GRPOExtTrainer
    return trainer_cls(
        model=model or resolve_model_path("tiny:tiny"),
        reward_funcs=[digit_reward, length_reward] if reward_funcs is _DEFAULT_REWARDS else reward_funcs,
        args=tiny_args(tmp_path / "run", **overrides),
        train_dataset=dataset if dataset is not None else prompt_dataset(16),
        processing_class=tiny_tokenizer_cached(),
    )


def last_logged(log_history, key):
    """Values of `key` over the logging steps of a run."""
    return [entry[key] for entry in log_history if key in entry]


REPO_ROOT = Path(__file__).resolve().parents[1]


def run_torchrun(script: str, *args: str, nproc: int = 2, env: dict[str, str] | None = None) -> None:
    """Run `torchrun --standalone --nproc_per_node=nproc script *args` from the repository root on CPU processes.

    Skips the test when torchrun is missing; fails with the tail of the output when the launch fails. Materialise tiny
    models before calling (`resolve_model_path`): processes racing to build one can collide.
    """
    import pytest

    torchrun = shutil.which("torchrun") or shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "ACCELERATE_USE_CPU": "true",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        **(env or {}),
    }
    command = [torchrun, "--standalone", f"--nproc_per_node={nproc}", script, *map(str, args)]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


def everything_shown(exc: BaseException | None, caplog, caught: list) -> str:
    """Every message a user can see: the whole traceback with its chained causes, the log records, the warnings."""
    shown = [] if exc is None else traceback.format_exception(type(exc), exc, exc.__traceback__)
    seen = []
    while exc is not None and exc not in seen:  # chained causes too, even those a traceback would not print
        seen.append(exc)
        shown.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    shown += [record.getMessage() for record in caplog.records]
    shown += [str(w.message) for w in caught]
    return "\n".join(shown)
