"""`GRPOExtTrainer`: `trl.GRPOTrainer` plus the ladder, the advantage estimators and named objectives. Wiring only.

Each feature hooks the smallest TRL method and calls `super()`; no TRL method body is copied (docs/architecture.md):

| feature            | TRL method wrapped                        | what the wrapper does                                    |
|--------------------|-------------------------------------------|----------------------------------------------------------|
| ladder: sampling   | `_generate_single_turn`                   | generate: temperature 1.0 + a per-row logits processor;  |
|                    |                                           | vLLM: per-row SamplingParams / one request per rung      |
| ladder: scoring    | `_get_per_token_logps_and_entropies`      | scales each row's last hidden state by T_base / T_row    |
| ladder: loss rows  | `_generate_and_score_completions` output  | adds `ext_temperature`, which follows TRL's shuffle/split |
| advantages         | `_calculate_rewards` + `_generate_and_score_completions` | captures the gathered rewards, replaces the advantages |
| objectives         | `__init__`                                | expands `WeightedReward` into TRL reward funcs + weights |
| closed-loop ladder | `_generate_and_score_completions` + a callback | scales the ladder; checkpointed as a stateful callback |
| online reward model| `__init__` + a callback                   | builds `learned_preference`; the objective checkpoints itself |
| share_prompt       | `_get_per_token_logps_and_entropies`,     | each distinct prompt's keys/values computed once          |
|                    | `_generate_single_turn`                   | (efficiency/shared_prompt.py)                             |
| skip_zero_advantage| `_compute_loss` + the log-prob forward    | only rows with a non-zero advantage are computed          |
| dynamic_sampling   | `_generate_and_score_completions`         | calls it again on new prompts; tied groups replaced      |
|                    | + a callback (the prompt order)           | (sampling/dynamic.py)                                     |

With no new option set, every wrapper falls straight through to TRL.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from .advantages import estimate_advantages, get_advantage_estimator, weighted_rewards
from .config import GRPOExtConfig
from .efficiency import (
    check_efficiency_options,
    fill_rows,
    prompt_positions_saved,
    rows_with_signal,
    shared_prefill_generation,
    shared_prompt_log_probs,
    skipped_rows_stats,
)
from .kit import is_kit_name, resolve_model_path
from .rewards import check_required_columns
from .rewards.expansion import build_reward_funcs, expand_aligned, expand_objectives, final_weights
from .sampling import (
    LadderController,
    RefillSampler,
    check_dynamic_sampling,
    check_exact_temperature_scoring,
    check_ladder_generation,
    distinct_fraction,
    fill_batch,
    gather_batch,
    group_ladder,
    local_rows,
    reward_by_rung,
    row_temperature_generation,
    row_temperatures,
    scale_hidden_states,
    teaching_groups,
    tie_ends,
    zero_std_fraction,
)
from .sampling.vllm_backend import ladder_vllm_generation
from .sampling.vllm_cpu import plain_cpu_linear_weights

TEMPERATURE_KEY = "ext_temperature"
_SUMMED_METRICS = ("errors", "judge_calls", "judge_cache_hits", "judge_retries")
_SCORING_KWARGS = ("batch_size", "compute_entropy", "compute_aux_loss")


class GRPOExtTrainer(GRPOTrainer):
    """Drop-in replacement for `trl.GRPOTrainer`, configured by [`GRPOExtConfig`].

    Example:
        >>> from trl_grpo_ext import GRPOExtConfig, GRPOExtTrainer
        >>> from trl_grpo_ext.rewards import WeightedReward, accuracy, readability
        >>> args = GRPOExtConfig("out", temperature_schedule="linear", advantage_estimator="rank")
        >>> trainer = GRPOExtTrainer(model, reward_funcs=WeightedReward({"accuracy": accuracy,
        ...     "readability": readability}, weights={"accuracy": 0.8, "readability": 0.2}), args=args,
        ...     train_dataset=dataset)  # doctest: +SKIP
    """

    _tag_names = ["trl", "grpo", "trl-grpo-ext"]

    def __init__(
        self,
        model,
        reward_funcs=None,
        args: GRPOExtConfig | GRPOConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        reward_processing_classes=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
        tools=None,
        rollout_func=None,
        environment_factory=None,
    ):  # trl.GRPOTrainer's signature, so that every positional call works alike
        model, args = _model_and_args(model, args)
        reward_funcs = build_reward_funcs(reward_funcs, args)
        check_ladder_generation(args, tools=tools, rollout_func=rollout_func, environment_factory=environment_factory)
        rewards = expand_objectives(reward_funcs, args, self._group_layout)
        if rewards.objectives and getattr(train_dataset, "column_names", None) is not None:
            check_required_columns(rewards.objectives, train_dataset.column_names)
        if rewards.counts is not None:
            reward_processing_classes = expand_aligned(reward_processing_classes, rewards.counts)

        # TRL reads `reward_weights` once, in __init__; restore the user's value so the config can be reused.
        user_weights = args.reward_weights
        if rewards.objectives:
            args.reward_weights = rewards.weights
        # A colocated vLLM engine on a CPU must keep plain linear weights for TRL's weight sync (sampling/vllm_cpu.py).
        colocated = args.use_vllm and args.vllm_mode == "colocate"
        engine_weights = plain_cpu_linear_weights() if colocated else contextlib.nullcontext()
        try:
            with engine_weights:
                super().__init__(
                    model=model,
                    reward_funcs=rewards.funcs,
                    args=args,
                    train_dataset=train_dataset,
                    eval_dataset=eval_dataset,
                    processing_class=processing_class,
                    reward_processing_classes=reward_processing_classes,
                    callbacks=callbacks,
                    optimizers=optimizers,
                    quantization_config=quantization_config,
                    peft_config=peft_config,
                    tools=tools,
                    rollout_func=rollout_func,
                    environment_factory=environment_factory,
                )
        finally:
            args.reward_weights = user_weights
        if rewards.objectives:
            # Reward-model objectives are named by their objective, not model id. TRL appends an environment's
            # `get_reward` after the reward functions: it keeps its own name.
            self.reward_func_names = rewards.names + self.reward_func_names[len(rewards.names) :]

        self._objective_names = list(rewards.objectives)
        self._initial_reward_weights = self.reward_weights.clone()
        self._final_reward_weights = final_weights(args, self.reward_func_names, self.reward_weights)
        self._advantage_estimator = (
            None if args.advantage_estimator == "zscore" else get_advantage_estimator(args.advantage_estimator)
        )
        self._sampling_ladder: list[float] | None = None  # the K temperatures of the batch being generated
        self._sampling_temperatures: torch.Tensor | None = None  # rows being generated now
        self._scoring_temperatures: torch.Tensor | None = None  # rows to score at their own temperature
        self._hooked_temperatures: torch.Tensor | None = None  # the same, only while log-probs are computed
        self._scoring_cursor = 0
        self._captured_rewards: torch.Tensor | None = None
        self._loss_rows: torch.Tensor | None = None  # skip_zero_advantage: the rows the loss computes
        self._kept_entropies: torch.Tensor | None = None
        self._loss_placeholder: torch.Tensor | None = None  # a skipped row's log-probs: its old-policy ones
        self._captured_completion_ids: list[list[int]] | None = None
        if args.uses_ladder and args.ladder_logprob_temperature == "sampled":
            self._install_scoring_hooks()
        if args.temperature_control != "none":
            self.add_callback(LadderController.from_config(args))
        check_efficiency_options(args, self)
        self._refill_sampler = None  # dynamic_sampling: the order new prompts are drawn in (checkpointed)
        if args.dynamic_sampling:
            check_dynamic_sampling(self.train_dataset, self._is_vlm)
            self._refill_sampler = RefillSampler(len(self.train_dataset), args.seed)
            self.add_callback(self._refill_sampler)
        for objective in map(inspect.unwrap, self.reward_funcs):  # stateful objectives (OnlineRewardModel)
            if isinstance(objective, TrainerCallback) and objective not in self.callback_handler.callbacks:
                getattr(objective, "bind_trainer", lambda trainer: None)(self)
                self.add_callback(objective)

    # ------------------------------------------------------------------ objectives
    def _group_layout(self) -> tuple[int, int, int]:
        """(process index, number of processes, group size) for a group objective, at call time."""
        num_generations = self.num_generations if self.model.training else self.num_generations_eval
        return self.accelerator.process_index, self.accelerator.num_processes, num_generations

    def _schedule_fraction(self) -> float:
        """Fraction of training done, from `state.global_step` (so schedules survive resume)."""
        max_steps = self.state.max_steps or 0
        return min(max(self.state.global_step / max_steps, 0.0), 1.0) if max_steps > 0 else 0.0

    def _update_reward_weights(self) -> None:
        if self._final_reward_weights is None:
            return
        frac = self._schedule_fraction()
        self.reward_weights = (
            self._initial_reward_weights + (self._final_reward_weights - self._initial_reward_weights) * frac
        )

    def _log_metric(self, name: str, value: float):
        # TRL averages a reward-side metric over processes; a count (errors, judge calls) must add up instead.
        objective, _, suffix = name.removeprefix("rewards/").rpartition("/")
        if name.startswith("rewards/") and objective in self._objective_names and suffix in _SUMMED_METRICS:
            value = value * self.accelerator.num_processes
        super()._log_metric(name, value)

    # ------------------------------------------------------------------ ladder: sampling
    @property
    def ladder_controller(self) -> LadderController | None:
        """The closed-loop controller (`temperature_control`), looked up among the callbacks: transformers replaces a
        stateful callback by a restored copy when `restore_callback_states_from_checkpoint` is set."""
        return next((cb for cb in self.callback_handler.callbacks if isinstance(cb, LadderController)), None)

    def current_ladder(self, num_generations: int) -> list[float]:
        """The K temperatures of the ladder at the current global step (scaled by the controller in training)."""
        args = self.args
        ladder = group_ladder(
            num_generations,
            schedule=args.temperature_schedule,
            temperature=self.temperature,
            temperature_range=args.temperature_range,
            group_temperatures=args.group_temperatures,
            temperature_range_final=args.temperature_range_final,
            step=self.state.global_step,
            max_steps=self.state.max_steps or 0,
        )
        controller = self.ladder_controller
        return controller.apply(ladder) if controller is not None and self.model.training else ladder

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        if self.args.share_prompt and not self.use_vllm:  # vLLM shares prompts by its own prefix caching
            model = self.accelerator.unwrap_model(self.model_wrapped)
            with shared_prefill_generation(model):
                return self._generate_with_ladder(prompt_ids, *args, **kwargs)
        return self._generate_with_ladder(prompt_ids, *args, **kwargs)

    def _generate_with_ladder(self, prompt_ids, *args, **kwargs):
        temps = self._sampling_temperatures
        if temps is None:
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)
        if len(prompt_ids) != len(temps):
            raise RuntimeError(
                f"The temperature ladder holds {len(temps)} row temperatures but generation was asked for "
                f"{len(prompt_ids)} rows; only TRL's single-turn generation is supported with a ladder."
            )
        if self.use_vllm:
            process_index = self.accelerator.process_index
            context = ladder_vllm_generation(self.vllm_generation, self._sampling_ladder, len(temps), process_index)
        else:
            model = self.accelerator.unwrap_model(self.model_wrapped)
            context = row_temperature_generation(self, model, temps.to(self.accelerator.device))
        with context:
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)

    # ------------------------------------------------------------------ ladder: scoring
    def _install_scoring_hooks(self) -> None:
        """Scale row i's last hidden state by T_base / T_i before TRL's fused (bias-free) LM head.

        log_softmax(W (h * T_base / T_i) / T_base) = log_softmax(W h / T_i): exact for a linear head without bias
        or soft-capping, which `check_exact_temperature_scoring` enforces.
        """
        models = [self.accelerator.unwrap_model(self.model)]
        if self.ref_model is not None:
            models.append(self.accelerator.unwrap_model(self.ref_model))
        for model in models:
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            check_exact_temperature_scoring(base)
            base.base_model.register_forward_hook(self._scale_backbone_output)

    def _scale_backbone_output(self, module, inputs, output):
        temps = self._hooked_temperatures  # set only while _get_per_token_logps_and_entropies runs
        if temps is None:
            return None
        hidden = output.last_hidden_state
        rows = slice(self._scoring_cursor, self._scoring_cursor + hidden.size(0))
        self._scoring_cursor = rows.stop
        output.last_hidden_state = scale_hidden_states(hidden, self.temperature / temps[rows].to(hidden.device))
        return output

    @contextlib.contextmanager
    def _backbone_hook_paused(self):
        """The shared prompt's own backbone pass is not a row of the batch: the ladder's hook leaves it alone."""
        saved, self._hooked_temperatures = self._hooked_temperatures, None
        try:
            yield
        finally:
            self._hooked_temperatures = saved

    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, **kwargs
    ):
        keep, temps = self._loss_rows, self._scoring_temperatures
        kwargs.update(batch_size=batch_size, compute_entropy=compute_entropy)
        if keep is None:
            return self._scored_rows(model, input_ids, attention_mask, logits_to_keep, temps, **kwargs)
        rows = (input_ids[keep], attention_mask[keep], logits_to_keep, None if temps is None else temps[keep])
        logps, entropies, aux_loss = self._scored_rows(model, *rows, **kwargs)
        placeholder, self._loss_placeholder = self._loss_placeholder, None
        self._kept_entropies = entropies
        if entropies is not None:
            entropies = fill_rows(entropies, keep, placeholder.new_zeros(placeholder.shape))
        return fill_rows(logps, keep, placeholder), entropies, aux_loss

    def _scored_rows(self, model, input_ids, attention_mask, logits_to_keep, temps, **kwargs):
        """TRL's log-prob forward, with each row at its own temperature (ladder) and shared prompts (share_prompt)."""
        forward = super()._get_per_token_logps_and_entropies
        if self.args.share_prompt:
            # compute_aux_loss is refused at construction (a MoE auxiliary loss); the rest are multimodal inputs
            multimodal = [key for key, value in kwargs.items() if key not in _SCORING_KWARGS and value is not None]
            if multimodal:
                raise RuntimeError(f"`share_prompt` scores text-only batches; this batch has {multimodal}.")
            kwargs = {key: kwargs[key] for key in ("batch_size", "compute_entropy")}
            forward = functools.partial(
                shared_prompt_log_probs,
                autocast=self.accelerator.autocast,
                prompt_pass=self._backbone_hook_paused,
                plain=forward,
            )
        if temps is None:
            return forward(model, input_ids, attention_mask, logits_to_keep, **kwargs)
        if len(temps) != input_ids.size(0):
            raise RuntimeError(f"{len(temps)} row temperatures for {input_ids.size(0)} rows being scored.")
        self._scoring_cursor = 0
        self._hooked_temperatures = temps
        try:
            result = forward(model, input_ids, attention_mask, logits_to_keep, **kwargs)
        finally:
            self._hooked_temperatures = None
        if self._scoring_cursor != input_ids.size(0):
            raise RuntimeError(
                f"Temperature scoring saw {self._scoring_cursor} of {input_ids.size(0)} rows: the backbone hook did "
                "not run once per chunk (unsupported model wrapper?)."
            )
        return result

    def _compute_loss(self, model, inputs):
        self._scoring_temperatures = inputs.get(TEMPERATURE_KEY)
        if self.args.skip_zero_advantage:
            self._loss_rows = rows_with_signal(inputs["advantages"])
            # A skipped row's log-probs are its old ones (ratio 1; TRL uses the new ones, detached, when it has none).
            old, completion_ids = inputs.get("old_per_token_logps"), inputs["completion_ids"]
            self._loss_placeholder = (
                completion_ids.new_zeros(completion_ids.shape, dtype=torch.float32) if old is None else old
            )
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            self._scoring_temperatures = None
            keep, self._loss_rows = self._loss_rows, None
            kept_entropies, self._kept_entropies = self._kept_entropies, None
        if keep is not None:
            self._log_skipped_rows(inputs, keep, kept_entropies)
        if self.args.share_prompt:
            self._log_shared_prompt(inputs, keep)
        return loss

    def _log_skipped_rows(self, inputs, keep: torch.Tensor, kept_entropies: torch.Tensor | None) -> None:
        """`efficiency/skipped_rows_frac`, and TRL's `entropy` re-measured on the rows computed (global means)."""
        mode = "train" if self.model.training else "eval"
        mask = inputs["completion_mask"] * inputs["tool_mask"] if "tool_mask" in inputs else inputs["completion_mask"]
        stats = self.accelerator.reduce(skipped_rows_stats(keep, mask, kept_entropies), reduction="sum")
        skipped, rows, entropy_sum, tokens = stats.tolist()
        self._metrics[mode]["efficiency/skipped_rows_frac"].append(skipped / rows)
        if kept_entropies is not None and self._metrics[mode]["entropy"]:
            self._metrics[mode]["entropy"][-1] = entropy_sum / max(tokens, 1.0)

    def _log_shared_prompt(self, inputs, keep: torch.Tensor | None) -> None:
        """`efficiency/prompt_tokens_saved_frac`: prompt positions of the loss's forward not computed again."""
        mode = "train" if self.model.training else "eval"
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        if keep is not None:
            prompt_ids, prompt_mask = prompt_ids[keep], prompt_mask[keep]
        local = prompt_positions_saved(prompt_ids, prompt_mask).to(self.accelerator.device)
        saved, total = self.accelerator.reduce(local, reduction="sum").tolist()
        self._metrics[mode]["efficiency/prompt_tokens_saved_frac"].append(saved / max(total, 1.0))

    # ------------------------------------------------------------------ rewards and advantages
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._captured_rewards = rewards_per_func  # gathered over processes: (global batch, num reward funcs)
        self._captured_completion_ids = (
            completion_ids_list  # local, unmasked (mask_truncated_completions zeroes the mask)
        )
        return rewards_per_func

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output, rewards_per_func = self._score_round(inputs, first=True)
        if self._refill_sampler is None or not self.model.training:
            return output
        return self._refill_tied_groups(output, rewards_per_func)

    def _refill_tied_groups(self, output, rewards_per_func) -> dict[str, Any]:
        """dynamic_sampling: groups that do not teach replaced by new prompts' groups (sampling/dynamic.py)."""
        num_generations, process = self.num_generations, self.accelerator.process_index
        per_row = (TEMPERATURE_KEY,) if TEMPERATURE_KEY in output else ()
        pad_token_id = self.processing_class.pad_token_id if hasattr(self.processing_class, "pad_token_id") else None
        pad_token_id = self._tokenizer.pad_token_id if pad_token_id is None else pad_token_id

        def draw_inputs(groups: int) -> list[dict]:
            rows = local_rows(
                self._refill_sampler.draw(groups), num_generations, process, output["advantages"].size(0)
            )
            return [self.train_dataset[row] for row in rows]

        output, stats = fill_batch(
            output,
            rewards_per_func,
            functools.partial(self._score_round, first=False),
            is_teaching=lambda rewards: teaching_groups(rewards, self.reward_weights, num_generations),
            draw_inputs=draw_inputs,
            gather=lambda batch: gather_batch(batch, self.accelerator, pad_token_id, per_row),
            process_index=process,
            num_generations=num_generations,
            max_rounds=self.args.dynamic_sampling_max_rounds,
            pad_token_id=pad_token_id,
            per_row=per_row,
        )
        metrics = self._metrics["train"]
        metrics["dynamic_sampling/rounds"].append(stats["rounds"])
        metrics["dynamic_sampling/groups_generated"].append(stats["groups_generated"])
        if stats["teaching"]:  # none kept: no ratio (the step's entry leaves it out)
            metrics["dynamic_sampling/groups_per_kept"].append(stats["groups_generated"] / stats["teaching"])
        metrics["dynamic_sampling/teaching_frac"].append(stats["teaching"] / stats["groups"])
        return output

    def _score_round(self, inputs: list[dict[str, Any]], first: bool) -> tuple[dict[str, Any], torch.Tensor]:
        """TRL's generation and scoring of `inputs`, with the ladder and the estimator; (output, gathered rewards).
        `first`: the batch TRL's sampler gave (the closed-loop ladder measures that one only)."""
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        self._update_reward_weights()
        ladder = temps = None
        if self.args.uses_ladder:
            ladder = self.current_ladder(num_generations)
            temps = row_temperatures(ladder, len(inputs), self.accelerator.process_index)
            self._sampling_ladder, self._sampling_temperatures = ladder, temps
            if self.args.ladder_logprob_temperature == "sampled":
                self._scoring_temperatures = temps  # old-policy and reference log-probs, in generation order
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._sampling_ladder = self._sampling_temperatures = None
            self._scoring_temperatures = None

        rewards_per_func, self._captured_rewards = self._captured_rewards, None
        completion_ids, self._captured_completion_ids = self._captured_completion_ids, None
        if self._advantage_estimator is not None:
            self._replace_advantages(output, rewards_per_func, num_generations)
        if mode == "train" and first:
            self._update_ladder_control(rewards_per_func, num_generations)
        self._log_extension_metrics(mode, output, rewards_per_func, completion_ids, num_generations, ladder)
        if temps is not None and self.args.ladder_logprob_temperature == "sampled":
            output[TEMPERATURE_KEY] = temps.to(self.accelerator.device)  # follows the rows through shuffle/split
        return output, rewards_per_func

    def _update_ladder_control(self, rewards_per_func, num_generations: int) -> None:
        """Once per generation batch: measure the signal on the gathered (global) rewards, move the ladder, log."""
        controller = self.ladder_controller
        if controller is None:
            return
        signal = zero_std_fraction(rewards_per_func, self.reward_weights, num_generations)
        controller.update(signal)
        self._metrics["train"]["ladder/zero_std_frac"].append(signal)
        self._metrics["train"]["ladder/zero_std_target"].append(controller.target)

    def _replace_advantages(self, output, rewards_per_func, num_generations: int) -> None:
        advantages = estimate_advantages(
            rewards_per_func,
            self.reward_weights.to(rewards_per_func.device),
            num_generations,
            self._advantage_estimator,
            self.multi_objective_aggregation,
        )
        n_local = output["advantages"].size(0)
        start = self.accelerator.process_index * n_local
        output["advantages"] = advantages[start : start + n_local].to(output["advantages"].device)
        # The completions table shows the advantages that are trained on.
        logged = self._logs["advantages"]
        for _ in range(min(len(advantages), len(logged))):
            logged.pop()
        logged.extend(advantages.tolist())

    def _log_extension_metrics(self, mode, output, rewards_per_func, completion_ids, num_generations, ladder) -> None:
        """Each metric only with the option it describes, so that no option set logs exactly TRL's keys."""
        metrics = self._metrics[mode]
        if self._advantage_estimator is not None:
            advantages = self.accelerator.gather(output["advantages"]).float()
            metrics["advantages/mean"].append(advantages.mean().item())
            metrics["advantages/std"].append(advantages.std().item() if advantages.numel() > 1 else 0.0)
            metrics["advantages/abs_max"].append(advantages.abs().max().item())
        if self.args.log_tied_groups or self.args.dynamic_sampling:
            top, bottom = tie_ends(rewards_per_func, self.reward_weights, num_generations)
            metrics["tied_groups/top_frac"].append(top)
            metrics["tied_groups/bottom_frac"].append(bottom)
        if self._final_reward_weights is not None:
            for name, weight in zip(self.reward_func_names, self.reward_weights.tolist()):
                metrics[f"objectives/{name}/weight"].append(weight)
        if ladder is None:
            return
        metrics["ladder/t_min"].append(min(ladder))
        metrics["ladder/t_max"].append(max(ladder))
        # Group diversity on the global batch, from the generated ids (not the loss mask, which
        # mask_truncated_completions zeroes for every truncated completion).
        local = [tuple(ids) for ids in completion_ids]
        metrics["ladder/distinct_frac"].append(distinct_fraction(gather_object(local), num_generations))
        rewards = weighted_rewards(rewards_per_func, self.reward_weights)
        for rung, reward in enumerate(reward_by_rung(rewards, num_generations).tolist()):
            metrics[f"ladder/reward_rung_{rung}"].append(reward)


def _model_and_args(model, args):
    """A kit name resolved to its local checkpoint; `args` as a `GRPOExtConfig` (TRL's default name when None; a
    `trl.GRPOConfig` converted with every TRL field kept and the extension fields at their defaults)."""
    if is_kit_name(model):  # "tiny:small", "smollm2:135m-instruct": the offline kit's local checkpoint
        model = resolve_model_path(model)
    if args is None:
        name = model if isinstance(model, str) else model.config._name_or_path
        return model, GRPOExtConfig(f"{str(name).split('/')[-1]}-GRPO")
    if isinstance(args, GRPOExtConfig):
        return model, args
    if not isinstance(args, GRPOConfig):
        raise TypeError(f"`args` must be a GRPOExtConfig or a trl.GRPOConfig, got {type(args).__name__}.")
    return model, GRPOExtConfig.from_trl(args)
