"""`trl-grpo-ext train`: train from a recipe, in this process.

    trl-grpo-ext train --config recipes/tiny/cpu-offline.yaml [--key value ...] [--dry-run]

`train` reads the recipe format of `trl grpo`: TRL's `TrlParser` over the same dataclasses as TRL's GRPO script
(`GRPOScriptArguments`, the config, `ModelConfig`, `DatasetMixtureConfig`), with `GRPOExtConfig` in place of
`GRPOConfig`, plus `ExtScriptArguments` (dataset presets of `cli.data`, system prompt). A `trl grpo` recipe therefore
runs unchanged; our keys are optional. Unlike `trl grpo`, training runs in this process, so it composes with any
launcher (`accelerate launch -m trl_grpo_ext train ...`, `torchrun -m trl_grpo_ext train ...`); a recipe that names
launcher settings (`accelerate_config`, `num_processes`, ...) is relaunched through `accelerate launch`, as
`trl grpo` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .. import kit
from ..loading import load_callable
from .data import DATASET_PRESETS, GENERATED_PRESETS, GSM8K_DATASET, apply_preset, generated_splits

# Set in the environment of a process we relaunched, so it does not relaunch again.
_LAUNCHED_ENV = "TRL_GRPO_EXT_LAUNCHED"
_DRY_RUN_FLAGS = ("--dry-run", "--dry_run")


@dataclass
class ExtScriptArguments:
    """
    Script arguments of trl-grpo-ext, next to those of TRL's GRPO script.

    Args:
        dataset_preset (`str`, *optional*):
            Maps the dataset to `prompt` + `answer` columns: `"gsm8k"`, `"prompt_answer"`, `"arithmetic"` or
            `"chat_addition"` (both generated offline). See `trl_grpo_ext.cli.data`. Unset: the dataset is used as loaded, like `trl grpo`.
        system_prompt (`str`, *optional*):
            System message put before every prompt of a preset.
        conversational (`bool`, *optional*, defaults to `True`):
            Whether preset prompts become chat messages (the chat template is applied) or stay plain text.
        prompt_column (`str`, *optional*, defaults to `"prompt"`):
            Prompt column of the `prompt_answer` preset.
        answer_column (`str`, *optional*, defaults to `"answer"`):
            Reference answer column of the `prompt_answer` preset.
        dataset_num_examples (`int`, *optional*):
            Rows of a generated task (default 256), or the first rows kept of each loaded split.
    """

    dataset_preset: str | None = field(
        default=None,
        metadata={
            "help": "Dataset preset that maps the data to `prompt` + `answer` columns: 'gsm8k', 'prompt_answer', "
            "'arithmetic' or 'chat_addition' (both generated offline, no dataset_name needed). Unset: the dataset is used as loaded.",
            "choices": list(DATASET_PRESETS),
        },
    )
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "System message put before every prompt of a dataset preset."},
    )
    conversational: bool = field(
        default=True,
        metadata={
            "help": "Whether dataset-preset prompts become chat messages (the model's chat template is applied) or "
            "stay plain text (prefixed by system_prompt)."
        },
    )
    prompt_column: str = field(
        default="prompt", metadata={"help": "Prompt column of the 'prompt_answer' dataset preset."}
    )
    answer_column: str = field(
        default="answer", metadata={"help": "Reference answer column of the 'prompt_answer' dataset preset."}
    )
    dataset_num_examples: int | None = field(
        default=None,
        metadata={
            "help": "Rows of a generated task, 'arithmetic' or 'chat_addition' (default 256), or the first N rows kept of each loaded "
            "split (a quick smoke run on a Hub dataset)."
        },
    )

    def __post_init__(self):
        if self.dataset_preset is not None and self.dataset_preset not in DATASET_PRESETS:
            raise ValueError(f"`dataset_preset` must be one of {list(DATASET_PRESETS)}, got {self.dataset_preset!r}.")
        if self.dataset_num_examples is not None and self.dataset_num_examples < 1:
            raise ValueError(f"`dataset_num_examples` must be >= 1, got {self.dataset_num_examples}.")


def make_train_parser(prog: str = "trl-grpo-ext train"):
    """The `TrlParser` of `train`: TRL's GRPO-script dataclasses with `GRPOExtConfig`, plus `ExtScriptArguments`."""
    from trl import DatasetMixtureConfig, ModelConfig, TrlParser
    from trl.scripts.grpo import GRPOScriptArguments

    from ..config import GRPOExtConfig

    class TrainParser(TrlParser):
        def error(self, message):
            # argparse prints the whole usage first: hundreds of lines for these dataclasses. One line is enough.
            self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")

    dataclass_types = (GRPOScriptArguments, GRPOExtConfig, ModelConfig, DatasetMixtureConfig, ExtScriptArguments)
    return TrainParser(dataclass_types, prog=prog)


# ---------------------------------------------------------------------------------------------------------- train
class _RecipeError(ValueError):
    """A problem with the recipe or the command line, reported as one `error: ...` line."""


def _split_dry_run(argv: list[str]) -> tuple[list[str], bool]:
    kept = [a for a in argv if a not in _DRY_RUN_FLAGS]
    return kept, len(kept) != len(argv)


def _launch_actions() -> dict[str, argparse.Action]:
    """`accelerate launch` options by their `--name` (both spellings), without those that only make sense to it."""
    from accelerate.commands.launch import launch_command_parser

    own = {"help", "module", "no_python", "training_script", "training_script_args"}
    return {
        option: action
        for option, action in launch_command_parser()._option_string_actions.items()
        if option.startswith("--") and action.dest not in own
    }


def _sort_leftovers(config_remaining: list[str], cli_remaining: list[str]):
    """Split what the dataclasses did not consume into `accelerate launch` arguments and unknown keys.

    `config_remaining` holds `--key value` pairs from the recipe; `cli_remaining` the command-line tokens as typed.
    Returns (launch args from the recipe, launch args from the command line, unknown recipe keys, unknown flags).
    """
    launch = _launch_actions()
    config_launch, unknown_keys = [], []
    for flag, value in zip(config_remaining[0::2], config_remaining[1::2]):
        if flag == "--accelerate_config":
            config_launch += [flag, value]
        elif flag in launch:
            if launch[flag].nargs == 0:  # a switch: `multi_gpu: true` means `--multi_gpu`
                config_launch += [flag] if value.lower() in ("true", "1", "yes") else []
            else:
                config_launch += [flag, value]
        else:
            unknown_keys.append(flag[2:])
    cli_launch, unknown_flags = [], []
    tokens = iter(cli_remaining)
    for token in tokens:
        name = token.split("=", 1)[0]
        if name == "--accelerate_config" or name in launch:
            cli_launch.append(token)
            takes_value = name == "--accelerate_config" or launch[name].nargs != 0
            if takes_value and "=" not in token:
                cli_launch.append(next(tokens, ""))
        else:
            unknown_flags.append(token)
    return config_launch, cli_launch, unknown_keys, unknown_flags


def _unknown_message(parser, unknown_keys: list[str], unknown_flags: list[str], config_path: str | None) -> str:
    known = sorted({a.dest for a in parser._actions if a.dest != "help"})
    parts = []
    for key in unknown_keys:
        hint = difflib.get_close_matches(key, known, n=1)
        parts.append(
            f"unknown recipe key `{key}` in {config_path}" + (f" (did you mean `{hint[0]}`?)" if hint else "")
        )
    for flag in unknown_flags:
        key = flag.lstrip("-").split("=", 1)[0]
        hint = difflib.get_close_matches(key, known, n=1) if flag.startswith("-") else []
        what = "unknown option" if flag.startswith("-") else "unexpected argument"
        parts.append(f"{what} `{flag}`" + (f" (did you mean `--{hint[0]}`?)" if hint else ""))
    return (
        "; ".join(parts)
        + ". Keys are the fields of TRL's GRPO script arguments, GRPOExtConfig, ModelConfig, DatasetMixtureConfig "
        "and ExtScriptArguments (see docs/recipes.md), or `accelerate launch` options."
    )


def _check_choices(*instances) -> None:
    """argparse checks `choices` on the command line but not on recipe values: check them all here."""
    for instance in instances:
        for f in dataclasses.fields(instance):
            choices = f.metadata.get("choices")
            value = getattr(instance, f.name)
            if choices and value is not None and value not in choices:
                raise _RecipeError(f"`{f.name}` must be one of {list(choices)}, got {value!r}.")


def _trl_reward_funcs(names: list[str] | None) -> list:
    """The `reward_funcs` of TRL's GRPO script: TRL's named rewards or dotted import paths (`my_lib.rewards.f`)."""
    if not names:
        return []
    from trl.rewards import (
        accuracy_reward,
        get_soft_overlong_punishment,
        reasoning_accuracy_reward,
        think_format_reward,
    )

    registry = {
        "accuracy_reward": accuracy_reward,
        "reasoning_accuracy_reward": reasoning_accuracy_reward,
        "think_format_reward": think_format_reward,
        "get_soft_overlong_punishment": get_soft_overlong_punishment(max_completion_len=1280, soft_punish_cache=256),
    }
    funcs = []
    for name in names:
        if name in registry:
            funcs.append(registry[name])
            continue
        if "." not in name:
            raise _RecipeError(
                f"`reward_funcs` entry {name!r} is neither one of {list(registry)} nor a dotted import path "
                "(e.g. 'my_lib.rewards.custom_reward'); named objectives go in `reward_objectives`."
            )
        if os.getcwd() not in sys.path:  # a recipe's own module, next to it
            sys.path.insert(0, os.getcwd())
        try:
            funcs.append(load_callable(name, "reward_funcs"))
        except ValueError as err:
            raise _RecipeError(str(err)) from None
    return funcs


def _reward_funcs(script_args, training_args, objectives):
    """What the trainer gets as `reward_funcs`: None lets it build `reward_objectives` itself."""
    funcs = _trl_reward_funcs(script_args.reward_funcs)
    if script_args.reward_model_name_or_path:
        funcs.insert(0, script_args.reward_model_name_or_path)
    if not funcs and objectives is None:
        raise _RecipeError(
            "No reward: set `reward_objectives` (e.g. {accuracy: 0.7, readability: 0.2, novelty: 0.1}), "
            "`reward_funcs` or `reward_model_name_or_path`."
        )
    if not funcs:
        return None
    if objectives is not None:
        funcs.append(objectives)
    if training_args.reward_weights is not None and len(training_args.reward_weights) != len(funcs):
        raise _RecipeError(
            f"`reward_weights` has {len(training_args.reward_weights)} entries but there are {len(funcs)} reward "
            "functions (reward_model_name_or_path, then reward_funcs, then one for all of reward_objectives)."
        )
    return funcs


def _resolve_data_source(script_args, dataset_args, ext_args) -> None:
    """Refuse a recipe without data; the `gsm8k` preset alone means openai/gsm8k, config main."""
    if ext_args.dataset_preset in GENERATED_PRESETS:
        return
    if not (dataset_args.datasets or script_args.dataset_name):
        if ext_args.dataset_preset == "gsm8k":
            script_args.dataset_name, script_args.dataset_config = GSM8K_DATASET
            return
        raise _RecipeError(
            "No dataset: set `dataset_name` (with `dataset_config`), a `datasets` mixture, or "
            f"`dataset_preset: arithmetic` (offline). Presets: {list(DATASET_PRESETS)}."
        )


def _load_datasets(script_args, training_args, dataset_args, ext_args):
    """(train, eval) splits, loaded like TRL's GRPO script, then mapped by the dataset preset."""
    from trl import get_dataset

    want_eval = training_args.eval_strategy != "no"
    if ext_args.dataset_preset in GENERATED_PRESETS:
        num_examples = ext_args.dataset_num_examples or 256
        dataset = generated_splits(ext_args.dataset_preset, num_examples, training_args.seed, with_test=want_eval)
        train_split, test_split = "train", "test"
    else:
        if dataset_args.datasets:
            dataset = get_dataset(dataset_args)
            train_split, test_split = "train", "test"
        else:
            from datasets import load_dataset

            dataset = load_dataset(
                script_args.dataset_name, name=script_args.dataset_config, streaming=script_args.dataset_streaming
            )
            train_split, test_split = script_args.dataset_train_split, script_args.dataset_test_split
        if ext_args.dataset_num_examples:
            n = ext_args.dataset_num_examples
            dataset = {
                name: split.take(n) if not hasattr(split, "__len__") else split.select(range(min(n, len(split))))
                for name, split in dataset.items()
            }
    if train_split not in dataset:
        raise _RecipeError(f"The dataset has no split {train_split!r}; splits: {list(dataset)}.")
    if want_eval and test_split not in dataset:
        raise _RecipeError(f"`eval_strategy` is set but the dataset has no split {test_split!r}: {list(dataset)}.")
    train, test = dataset[train_split], (dataset[test_split] if want_eval else None)
    if ext_args.dataset_preset is None:
        return train, test

    def preset(split):
        return apply_preset(
            split,
            ext_args.dataset_preset,
            system_prompt=ext_args.system_prompt,
            conversational=ext_args.conversational,
            prompt_column=ext_args.prompt_column,
            answer_column=ext_args.answer_column,
        )

    return preset(train), (None if test is None else preset(test))


def _device_map(quantization_config) -> dict[str, int] | None:
    """A quantized model goes whole onto this process's GPU: what TRL's `get_kbit_device_map` did before TRL 1.x
    removed it. Not quantized, or no GPU: None, and TRL picks (`create_model_from_path`)."""
    import torch
    from accelerate import PartialState

    if quantization_config is None or not torch.cuda.is_available():
        return None
    return {"": PartialState().local_process_index}


def _ladder_summary(training_args) -> str:
    """The K temperatures of a group at step 0 (and at the last step when the ladder moves), as `group_ladder` gives
    them to the trainer."""
    from ..sampling import group_ladder

    k = training_args.num_generations
    kwargs = dict(
        schedule=training_args.temperature_schedule,
        temperature=training_args.temperature,
        temperature_range=training_args.temperature_range,
        group_temperatures=training_args.group_temperatures,
        temperature_range_final=training_args.temperature_range_final,
        max_steps=training_args.max_steps,
    )
    first = [round(t, 4) for t in group_ladder(k, step=0, **kwargs)]
    if not training_args.uses_ladder:
        return f"constant (TRL): all K={k} completions at temperature={training_args.temperature}"
    if training_args.group_temperatures is not None:
        how = "explicit group_temperatures"
    else:
        how = f"{training_args.temperature_schedule} over {training_args.temperature_range}"
    text = f"{how}, K={k} temperatures at step 0: {first}"
    if training_args.temperature_range_final is not None:
        if training_args.max_steps > 0:
            last = [round(t, 4) for t in group_ladder(k, step=training_args.max_steps, **kwargs)]
            text += f"; at step {training_args.max_steps}: {last}"
        else:
            text += f"; moving to {training_args.temperature_range_final} at the last step"
    if training_args.temperature_control != "none":
        text += (
            f"; closed loop ({training_args.temperature_control}): scaled toward "
            f"{training_args.temperature_control_target} +- {training_args.temperature_control_tolerance} at rate "
            f"{training_args.temperature_control_rate}, within {training_args.temperature_bounds}"
        )
    return text + f" (log-probs at the {training_args.ladder_logprob_temperature!r} temperature)"


def _quantization_summary(quant) -> str:
    if quant is None:
        return "no"
    if quant.load_in_4bit:
        return (
            f"4-bit {quant.bnb_4bit_quant_type} (bitsandbytes), compute dtype {quant.bnb_4bit_compute_dtype}, "
            f"double quant {quant.bnb_4bit_use_double_quant}"
        )
    return "8-bit (bitsandbytes)"


def _qualname(fn) -> str:
    module = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{name}"


def _explicit_keys(argv: list[str], recipe: dict) -> list[str]:
    """The keys the recipe and the command line set, in that order (the command line wins on a repeat)."""
    keys = [k for k in recipe if k != "env"]
    keys += [a[2:].split("=", 1)[0] for a in argv if a.startswith("--") and a != "--config"]
    return list(dict.fromkeys(keys))


def _setting(instances, key: str) -> Any:
    for instance in instances:
        if hasattr(instance, key):
            value = getattr(instance, key)
            return value.value if isinstance(value, Enum) else value
    return "(launcher setting)"


def _print_summary(parsed, launch: list[str], config: str | None, keys: list[str], notes: list[str]) -> None:
    from trl import get_peft_config, get_quantization_config

    from ..advantages import get_advantage_estimator
    from ..rewards import get_objective

    script_args, training_args, model_args, dataset_args, ext_args = parsed
    model = model_args.model_name_or_path
    where = "offline model kit, built locally on first use" if kit.is_kit_name(model) else "Hub id or local path"
    peft, quant = get_peft_config(model_args), get_quantization_config(model_args)
    if ext_args.dataset_preset in GENERATED_PRESETS:
        data = f"{ext_args.dataset_preset} task generated offline ({ext_args.dataset_num_examples or 256} rows, seed {training_args.seed})"
    elif dataset_args.datasets:
        data = "mixture of " + ", ".join(f"{d.path}[{d.split}]" for d in dataset_args.datasets)
    else:
        data = f"{script_args.dataset_name} (config {script_args.dataset_config}), split {script_args.dataset_train_split}"
    prompt_form = "chat messages" if ext_args.conversational else "plain text"
    estimator = training_args.advantage_estimator
    lines = [
        f"recipe:     {config or '(command line only)'}",
        f"model:      {model} ({where}); dtype={model_args.dtype}, trust_remote_code={training_args.trust_remote_code}",
        "peft:       "
        + (
            f"LoRA r={peft.r}, alpha={peft.lora_alpha}, dropout={peft.lora_dropout}, target_modules={peft.target_modules}"
            if peft is not None
            else "none (full fine-tuning)"
        ),
        f"quantized:  {_quantization_summary(quant)}",
        f"dataset:    {data}; preset={ext_args.dataset_preset} ({prompt_form}"
        + (f", system prompt {ext_args.system_prompt!r}" if ext_args.system_prompt else "")
        + ")",
        f"ladder:     {_ladder_summary(training_args)}",
        f"estimator:  {estimator} ({_qualname(get_advantage_estimator(estimator))})",
    ]
    if training_args.reward_objectives:
        weights = dict(training_args.reward_objectives)
        weights.update(training_args.objective_weights or {})
        described = ", ".join(f"{n}={w:g} ({_qualname(get_objective(n))})" for n, w in weights.items())
        lines.append(f"objectives: {described}; novelty_ngram={training_args.novelty_ngram}")
        if training_args.objective_weights_final:
            lines.append(f"            weights at the last step: {training_args.objective_weights_final}")
        lines.append(f"            reward_error_policy={training_args.reward_error_policy!r}")
        if training_args.principles:
            lines.append(f"principles: {_principles_summary(training_args.principles)}")
            lines.append(f"judge:      {_judge_summary(training_args.judge)} (not loaded by a dry run)")
        if training_args.online_reward_model:
            lines.append(f"online rm:  {_online_rm_summary(training_args.online_reward_model, training_args.judge)}")
    extra = [script_args.reward_model_name_or_path] if script_args.reward_model_name_or_path else []
    extra += list(script_args.reward_funcs or [])
    if extra:
        lines.append(
            f"rewards:    {extra}"
            + (f" with reward_weights={training_args.reward_weights}" if training_args.reward_weights else "")
        )
    lines += [
        f"batch:      per_device_train_batch_size={training_args.per_device_train_batch_size}, "
        f"gradient_accumulation_steps={training_args.gradient_accumulation_steps}, "
        f"num_generations={training_args.num_generations}, generation_batch_size={training_args.generation_batch_size}, "
        f"max_completion_length={training_args.max_completion_length}",
        "training:   "
        + (
            f"max_steps={training_args.max_steps}, "
            if training_args.max_steps > 0
            else f"num_train_epochs={training_args.num_train_epochs}, "
        )
        + f"learning_rate={training_args.learning_rate:g}, beta={training_args.beta}, loss_type={training_args.loss_type}, "
        f"gradient_checkpointing={training_args.gradient_checkpointing}, bf16={training_args.bf16}",
        f"output:     {training_args.output_dir}; report_to={training_args.report_to}",
    ]
    if launch:
        lines.append(f"launch:     accelerate launch {' '.join(launch)} -m trl_grpo_ext train ...")
    lines.append("settings of the recipe and the command line, as resolved:")
    lines += [f"  {key}: {_setting(parsed, key)!r}" for key in keys]
    lines += [f"note: {note}" for note in notes]
    lines.append("dry run OK: the recipe is valid; no model or dataset was loaded.")
    print("\n".join(lines))


def _principles_summary(principles: list[dict]) -> str:
    return "; ".join(f"{p['name']} (w={p['weight']:g}): {p['question']!r}" for p in principles)


def _online_rm_summary(block: dict, judge: dict | None) -> str:
    """One line for the `online_reward_model` block: the reward model, the labeler and the settings given."""
    from ..rewards.online_config import check_online_reward_model_config

    config = check_online_reward_model_config(block, judge)
    labeler = config.get("labeler")
    if labeler is None:
        described = "no labeler (frozen: it never learns)"
    else:
        details = ", ".join(f"{k}={v!r}" for k, v in labeler.items() if k != "type")
        described = f"labeler {labeler['type']}" + (f" ({details})" if details else "")
    given = ", ".join(f"{k}={v!r}" for k, v in config.items() if k not in ("model", "labeler"))
    return (
        f"{config['model']!r} scores `learned_preference`, {described}"
        + (f"; {given}" if given else "")
        + "; other settings at their defaults (not loaded by a dry run)"
    )


def _judge_summary(judge: dict) -> str:
    from ..rewards.judges import check_judge_config

    config = check_judge_config(judge)
    if config["kind"] == "local":
        return (
            f"local causal LM {config['model']!r}, batch_size={config['batch_size']}, dtype={config['dtype']}, "
            f"chat={config['chat']}"
        )
    key = f"key from ${config['api_key_env']}" if config["api_key_env"] else "no API key"
    endpoint = "chat/completions" if config["chat"] else "completions"
    return (
        f"{config['base_url']}/{endpoint} model {config['model']!r} ({key}), timeout={config['timeout']:g} s, "
        f"max_retries={config['max_retries']}, max_concurrency={config['max_concurrency']}, "
        f"top_logprobs={config['top_logprobs']}"
    )


def _without_subsequence(tokens: list[str], subsequence: list[str]) -> list[str]:
    """`tokens` without the ordered `subsequence` (the launcher options taken out of the command line)."""
    rest, i = [], 0
    for token in tokens:
        if i < len(subsequence) and token == subsequence[i]:
            i += 1
        else:
            rest.append(token)
    return rest


def _relaunch(launch_args: list[str], train_argv: list[str]) -> int:
    """Run `train_argv` under `accelerate launch launch_args` (what `trl grpo` does with launcher settings)."""
    from accelerate.commands.launch import launch_command, launch_command_parser
    from trl.cli.accelerate_config import resolve_accelerate_config_argument

    launch_args = resolve_accelerate_config_argument(launch_args)
    args = launch_command_parser().parse_args([*launch_args, "-m", "trl_grpo_ext", "train", *train_argv])
    previous = os.environ.get(_LAUNCHED_ENV)
    os.environ[_LAUNCHED_ENV] = "1"  # the launched processes inherit it
    try:
        launch_command(args)
    except subprocess.CalledProcessError as err:
        return err.returncode or 1
    finally:
        if previous is None:
            del os.environ[_LAUNCHED_ENV]
        else:
            os.environ[_LAUNCHED_ENV] = previous
    return 0


def _already_launched() -> bool:
    return os.environ.get(_LAUNCHED_ENV) == "1" or "LOCAL_RANK" in os.environ


def main(argv: list[str]) -> int:
    """`trl-grpo-ext train`: parse and validate the recipe, then train (or, with `--dry-run`, print the settings).

    A problem with the recipe, the data or the model setup (`ValueError`) is printed as one `error: ...` line and
    exits with status 2; errors during training itself keep their traceback.
    """
    try:
        prepared = _prepare(argv)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if isinstance(prepared, int):
        return prepared
    trainer, dataset_name = prepared
    args = trainer.args
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(args.output_dir)
    trainer.save_state()
    trainer.accelerator.print(f"Model and trainer state saved to {args.output_dir}.")
    if args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset_name)
    if hasattr(trainer, "end"):
        trainer.end()
    return 0


def _parse(argv: list[str]):
    parser = make_train_parser()
    *parsed, config_remaining, cli_remaining = parser.parse_args_and_config(
        argv, return_remaining_strings=True, separate_remaining_strings=True
    )
    return parser, parsed, config_remaining, cli_remaining


def _no_accelerator() -> bool:
    from transformers.utils import is_torch_bf16_gpu_available

    return not is_torch_bf16_gpu_available()


def _read_recipe(config_path: str) -> dict:
    """The recipe at `config_path`, read as TrlParser reads it (`yaml.safe_load`: no tags that build Python objects);
    `_RecipeError` naming the file unless it is a mapping of names (strings) to values, with an `env` mapping of
    variable names, which TrlParser passes on as keyword arguments and environment variables."""
    import yaml

    try:
        with open(config_path) as f:
            recipe = yaml.safe_load(f)
    except OSError as err:
        raise _RecipeError(f"cannot read the recipe {config_path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise _RecipeError(f"cannot parse the recipe {config_path}: {' '.join(str(err).split())}") from None
    if not isinstance(recipe, dict):
        kind = type(recipe).__name__
        kind = "an empty file" if recipe is None else f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
        raise _RecipeError(
            f"the recipe {config_path} must be a mapping of keys to values (`key: value` lines), got {kind}."
        )
    quote = "YAML reads a bare number, null, yes/no, on/off or true/false as a value: quote it"
    for key in recipe:
        if not isinstance(key, str):
            raise _RecipeError(
                f"recipe key {key!r} in {config_path} is not a name: keys are field names such as `learning_rate` "
                f"({quote})."
            )
    env = recipe.get("env", {})
    if not isinstance(env, dict):  # the values may be secrets: name the type only
        raise _RecipeError(
            f"`env` in the recipe {config_path} must be a mapping of variable names to values, got a "
            f"{type(env).__name__}."
        )
    for name in env:
        if not isinstance(name, str):
            raise _RecipeError(f"`env` variable name {name!r} in the recipe {config_path} must be a string ({quote}).")
    return recipe


def _prepare(argv: list[str]):
    """(trainer, dataset name) of the recipe, or an exit status when there is nothing to train here (dry run,
    relaunch)."""
    argv, dry_run = _split_dry_run(argv)
    if argv[-1:] == ["--config"]:
        raise _RecipeError("`--config` needs the path of a recipe: trl-grpo-ext train --config X.yaml.")
    config_path = argv[argv.index("--config") + 1] if "--config" in argv else None
    recipe = {} if config_path is None else _read_recipe(config_path)
    notes = []
    try:
        parser, parsed, config_remaining, cli_remaining = _parse(argv)
    except ValueError:
        # A GPU recipe checked on a machine without a GPU: TrainingArguments refuses bf16/fp16 there. Check the rest of
        # the recipe as if on its GPU; a real run on this machine still fails with TrainingArguments' message.
        if not (dry_run and _no_accelerator()):
            raise
        parser, parsed, config_remaining, cli_remaining = _parse([*argv, "--use_cpu", "true"])
        notes.append("no GPU here: checked with use_cpu=True; bf16/fp16 and the model need the recipe's hardware.")
    script_args, training_args, model_args, dataset_args, ext_args = parsed
    config_launch, cli_launch, unknown_keys, unknown_flags = _sort_leftovers(config_remaining, cli_remaining)
    if unknown_keys or unknown_flags:
        raise _RecipeError(_unknown_message(parser, unknown_keys, unknown_flags, config_path))
    _check_choices(model_args, ext_args)
    if not model_args.model_name_or_path:
        raise _RecipeError("`model_name_or_path` is required (a Hub id, a local path or 'tiny:small').")
    _resolve_data_source(script_args, dataset_args, ext_args)
    if "tensorboard" in (training_args.report_to or []):
        from transformers.integrations import is_tensorboard_available

        if not is_tensorboard_available():
            raise _RecipeError("`report_to` includes 'tensorboard' but it is not installed: pip install tensorboard.")
    objectives = None
    if training_args.reward_objectives:
        from ..rewards import weighted_reward_from_spec

        objectives = weighted_reward_from_spec(
            training_args.reward_objectives,
            training_args.novelty_ngram,
            principles=training_args.principles,
            judge=training_args.judge,
        )
    reward_funcs = _reward_funcs(script_args, training_args, objectives)

    launch = [] if _already_launched() else config_launch + cli_launch
    if dry_run:
        _print_summary(parsed, launch, config_path, _explicit_keys(argv, recipe), notes)
        return 0
    if launch:
        return _relaunch(launch, _without_subsequence(argv, cli_launch))
    trainer = _build_trainer(script_args, training_args, model_args, dataset_args, ext_args, reward_funcs)
    return trainer, script_args.dataset_name


def _build_trainer(script_args, training_args, model_args, dataset_args, ext_args, reward_funcs):
    """Load the data and build the trainer the way TRL's GRPO script does, with `GRPOExtTrainer`."""
    import transformers
    from trl import get_peft_config, get_quantization_config

    from ..trainer import GRPOExtTrainer

    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    model_init_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    quantization_config = get_quantization_config(model_args)
    device_map = _device_map(quantization_config)
    if device_map is not None:
        model_init_kwargs["device_map"] = device_map
    model_init_kwargs.update(training_args.model_init_kwargs or {})
    training_args.model_init_kwargs = model_init_kwargs

    train_dataset, eval_dataset = _load_datasets(script_args, training_args, dataset_args, ext_args)
    return GRPOExtTrainer(
        model=kit.resolve_model_path(model_args.model_name_or_path),
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        quantization_config=quantization_config,
        peft_config=get_peft_config(model_args),
    )
