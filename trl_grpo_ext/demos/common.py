"""What the two demos, the experiments and the benchmarks share: one greedy evaluation, the quiet environment and
progress bar of a run, the training arguments of a CPU run, and the results table.

The greedy evaluation is `greedy_evaluation`: one batched, left-padded `generate` loop over plain-text or chat prompts
(a chat prompt, a list of messages, goes through the tokenizer's chat template), scored by a rule on the replies
(`exact_scores`: the tiny kit's exact answer; `last_number_scores`: the `accuracy` objective's last number) and, if
asked, the policy's mean per-token entropy along the greedy replies (`completion_entropy`).

Heavy libraries (torch, transformers, TRL, datasets) are imported inside the functions, so that the command line
starts without them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path


# ---------------------------------------------------------------------------------------------------- evaluation
@dataclasses.dataclass(frozen=True)
class GreedyEvaluation:
    """What `greedy_evaluation` measured: the greedy `replies` (in the dataset's order), their `accuracy` (mean score)
    and, when asked, the policy's mean per-token `entropy` at T = 1 along them (else `None`)."""

    replies: list[str]
    accuracy: float
    entropy: float | None = None


def exact_scores(replies: Sequence[str], answers: Sequence[str]) -> list[float]:
    """1.0 where the reply is exactly the answer (`kit.tasks.is_correct`: surrounding white space aside), else 0.0.

    Example:
    >>> exact_scores(["321", " 321\\n", "3210"], ["321"] * 3)
    [1.0, 1.0, 0.0]
    """
    from ..kit.tasks import is_correct  # datasets: not at start-up

    return [float(is_correct(reply, answer)) for reply, answer in zip(replies, answers)]


def last_number_scores(replies: Sequence[str], answers: Sequence[str]) -> list[float]:
    """The `accuracy` objective: 1.0 where the reply's last number is the answer, else 0.0."""
    from ..rewards import accuracy  # torch and TRL: not at start-up

    return list(accuracy(None, list(replies), answer=list(answers)))


def completion_entropy(step_logits, tokens, eos_token_id: int) -> tuple[float, int]:
    """(sum, count) of the per-token entropy of softmax(logits) at T = 1 over greedy completions, each up to and
    including its first end-of-sequence token; `step_logits` is `generate(output_logits=True).logits`."""
    import torch

    logits = torch.stack(step_logits, dim=1).float()  # (B, steps, V)
    entropy = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)
    is_eos = tokens[:, : logits.shape[1]] == eos_token_id
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0  # positions after the first end-of-sequence token
    mask = ~after_eos
    return float((entropy * mask).sum()), int(mask.sum())


def greedy_replies(
    model, tokenizer, prompts: Sequence, max_new_tokens: int, batch_size: int | None = None, entropy: bool = False
) -> tuple[list[str], float | None]:
    """The greedy replies to `prompts` and, with `entropy=True`, the policy's mean per-token entropy at T = 1 along
    them (else `None`): the one evaluation loop of the demos and the experiments.

    Batched (`batch_size` prompts per `generate` call; `None`: all at once) and left-padded. A prompt is plain text or
    a chat (a list of messages, through the tokenizer's chat template with the generation prompt). The entropy is that
    of softmax(logits), whatever temperatures training samples at, averaged over the tokens of each reply up to and
    including its end-of-sequence token: how peaked the policy is, comparable between arms. The model's train mode
    and the tokenizer's padding side are restored after.
    """
    import torch

    prompts = list(prompts)
    batch_size = batch_size or max(len(prompts), 1)
    was_training = model.training
    model.eval()
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    replies, entropy_sum, entropy_count = [], 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                batch = prompts[start : start + batch_size]
                if isinstance(batch[0], list):  # chat messages
                    encoded = tokenizer.apply_chat_template(
                        batch, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
                    )
                else:
                    encoded = tokenizer(batch, return_tensors="pt", padding=True)
                encoded = encoded.to(model.device)
                output = model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    output_logits=entropy,
                    return_dict_in_generate=True,
                )
                tokens = output.sequences[:, encoded["input_ids"].shape[1] :]
                replies += tokenizer.batch_decode(tokens, skip_special_tokens=True)
                if entropy:
                    total, count = completion_entropy(output.logits, tokens, tokenizer.eos_token_id)
                    entropy_sum, entropy_count = entropy_sum + total, entropy_count + count
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return replies, (entropy_sum / max(entropy_count, 1) if entropy else None)


def greedy_evaluation(
    model,
    tokenizer,
    dataset,
    max_new_tokens: int,
    score: Callable[[Sequence[str], Sequence[str]], list[float]] = exact_scores,
    batch_size: int | None = None,
    entropy: bool = False,
) -> GreedyEvaluation:
    """
    Greedy replies to the `prompt`s of `dataset`, scored against its `answer`s (`greedy_replies`).

    Args:
        model (`PreTrainedModel`): a causal LM.
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer (padded on the left here, then restored).
        dataset (`datasets.Dataset`): columns `prompt` (text or chat messages) and `answer`.
        max_new_tokens (`int`): generation budget per prompt.
        score (`Callable`, *optional*, defaults to `exact_scores`): `(replies, answers) -> scores` in [0, 1];
            `last_number_scores` for the chat task.
        batch_size (`int`, *optional*): prompts per `generate` call; `None`: all at once.
        entropy (`bool`, *optional*, defaults to `False`): also the mean per-token entropy at T = 1.
    """
    replies, mean_entropy = greedy_replies(
        model, tokenizer, dataset["prompt"], max_new_tokens, batch_size=batch_size, entropy=entropy
    )
    scores = score(replies, list(dataset["answer"]))
    return GreedyEvaluation(replies, sum(scores) / len(replies), mean_entropy)


def greedy_accuracy(model, tokenizer, dataset, max_new_tokens: int, batch_size: int = 256) -> float:
    """Fraction of `dataset` rows whose greedy completion is exactly the answer (the tiny task's measure), in batches
    of `batch_size` prompts: `greedy_evaluation(...).accuracy`."""
    return greedy_evaluation(model, tokenizer, dataset, max_new_tokens, exact_scores, batch_size=batch_size).accuracy


# ---------------------------------------------------------------------------------------------------- a quiet run
@contextlib.contextmanager
def demo_environment(threads: int):
    """`threads` intra-op threads and quiet libraries, all restored after.

    One thread by default: on a shared CPU a second thread mostly waits (a training step of the demo model took 7x
    longer with two threads while other jobs ran; 1.6x shorter on an idle 2-core machine).
    """
    import torch
    import transformers
    from datasets.utils import logging as datasets_logging

    saved_threads = torch.get_num_threads()
    saved_verbosity = transformers.logging.get_verbosity()
    bars = [
        (datasets_logging.is_progress_bar_enabled(), datasets_logging),
        (transformers.utils.logging.is_progress_bar_enabled(), transformers.utils.logging),
    ]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    for _, module in bars:
        module.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # Deprecation notices of the libraries (e.g. TRL calling renamed transformers methods) say nothing
            # about the demo; they would only bury its output.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        torch.set_num_threads(saved_threads)
        transformers.logging.set_verbosity(saved_verbosity)
        for enabled, module in bars:
            if enabled:
                module.enable_progress_bar()


def progress_bar(description: str):
    """A `TrainerCallback`: one tqdm bar for the run, with the latest reward (GRPO) or loss (SFT) as postfix."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class ProgressBar(TrainerCallback):
        def __init__(self):
            self.bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=state.max_steps, desc=description, unit="step", dynamic_ncols=True)

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            keys = ("reward", "rewards/accuracy/mean") if "reward" in logs else ("loss",)
            shown = {k.split("/")[-2] if "/" in k else k: f"{logs[k]:.3f}" for k in keys if k in logs}
            if self.bar is not None and shown:
                self.bar.set_postfix(shown)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    return ProgressBar()


def quiet_trainer(trainer, description: str):
    """Swap the Trainer's log-printing callbacks for one compact progress bar (`progress_bar`); returns the trainer."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(progress_bar(description))
    return trainer


# ---------------------------------------------------------------------------------------------------- training
def common_training_args(output_dir: Path, seed: int) -> dict:
    """Training arguments of every demo and experiment run on a CPU (SFT, GRPO, TRL's or ours): no accelerator, fp32,
    no gradient checkpointing, no checkpoints, no reporting, no tqdm of the Trainer's own."""
    from transformers import TrainingArguments

    # TRL's configs turn checkpointing on by default: a 0.8 M-parameter model saves no memory worth the recompute.
    # Newer transformers call it `activation_checkpointing` and warn about the old name.
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return dict(
        output_dir=str(output_dir),
        use_cpu=True,
        bf16=False,  # TRL's configs default to bf16; on a CPU it is slower and only adds rounding
        **{checkpointing: False},
        report_to="none",
        save_strategy="no",
        seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def grpo_arm(common: dict, plain: bool, temperature_range, **ext_options):
    """`(args, trainer class, progress-bar label)` of one demo arm: plain `trl.GRPOTrainer` at TRL's defaults, or
    `GRPOExtTrainer` with the linear ladder over `temperature_range` and rank advantages (plus `ext_options`)."""
    if plain:
        from trl import GRPOConfig, GRPOTrainer

        return GRPOConfig(**common), GRPOTrainer, "GRPO trl.GRPOTrainer"
    from ..config import GRPOExtConfig  # TRL: not at start-up
    from ..trainer import GRPOExtTrainer

    args = GRPOExtConfig(
        **common,
        temperature_schedule="linear",
        temperature_range=list(temperature_range),
        advantage_estimator="rank",
        **ext_options,
    )
    return args, GRPOExtTrainer, "GRPO GRPOExtTrainer"


# ---------------------------------------------------------------------------------------------------- results
def final_objectives(trainer) -> dict[str, float]:
    """Last logged value of `reward` and each `rewards/{name}/mean`."""
    last = {}
    for entry in trainer.state.log_history:
        for key, value in entry.items():
            if key == "reward" or (key.startswith("rewards/") and key.endswith("/mean")):
                last[key] = value
    return last


def print_table(summary: dict, first_row: str = "SFT warm start") -> None:
    """The demo's table: the start (`first_row`) and each GRPO run of `summary["runs"]` with its steps, seconds,
    held-out accuracy and gain, then each run's last logged rewards."""
    before = summary["heldout_accuracy_before"]
    rows = [(first_row, summary["sft_steps"], summary["sft_seconds"], before, "")]
    for name, run in summary["runs"].items():
        gain = 100 * (run["heldout_accuracy_after"] - before)
        rows.append((f"+ GRPO: {name}", run["steps"], run["train_seconds"], run["heldout_accuracy_after"], gain))
    width = max(len(row[0]) for row in rows)
    print(f"\n{'phase':<{width}}  {'steps':>5}  {'seconds':>7}  {'held-out acc':>12}  {'gain':>11}")
    for name, steps, seconds, accuracy, gain in rows:
        gain_text = f"{gain:+.1f} points" if gain != "" else ""
        print(f"{name:<{width}}  {steps:>5}  {seconds:>7.1f}  {accuracy:>12.1%}  {gain_text:>11}")
    for name, run in summary["runs"].items():
        rewards = ", ".join(f"{key} {value:.3f}" for key, value in run["final_rewards"].items())
        print(f"last logged rewards, {name}: {rewards}")
    print(
        f"held-out: {summary['heldout_size']} test problems, greedy decoding; total time {summary['total_seconds']:.0f} s "
        f"({summary['cpu_seconds']:.0f} s CPU, {summary['threads']} torch thread(s))\n"
    )
