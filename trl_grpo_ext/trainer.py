"""`GRPOExtTrainer`: `trl.GRPOTrainer` plus the ladder, the advantage estimators and named objectives. Wiring only.

Each feature hooks the smallest TRL method and calls `super()`; no TRL method body is copied (docs/architecture.md):

| feature            | TRL method wrapped                        | what the wrapper does                                    |
|--------------------|-------------------------------------------|----------------------------------------------------------|
| ladder: sampling   | `_generate_single_turn`                   | temperature 1.0 in the config + a per-row logits processor |
| ladder: scoring    | `_get_per_token_logps_and_entropies`      | scales each row's last hidden state by T_base / T_row    |
| ladder: loss rows  | `_generate_and_score_completions` output  | adds `ext_temperature`, which follows TRL's shuffle/split |
| advantages         | `_calculate_rewards` + `_generate_and_score_completions` | captures the gathered rewards, replaces the advantages |
| objectives         | `__init__`                                | expands `WeightedReward` into TRL reward funcs + weights |
| closed-loop ladder | `_generate_and_score_completions` + a callback | scales the ladder; checkpointed as a stateful callback |

With no new option set, every wrapper falls straight through to TRL.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers import LogitsProcessorList
from trl import GRPOTrainer
from trl.trainer.utils import get_callable_name

from .advantages import estimate_advantages, get_advantage_estimator
from .config import GRPOExtConfig
from .rewards import WeightedReward, check_required_columns, guard_objective, weighted_reward_from_spec
from .sampling import (
    LadderController,
    RowTemperatureLogitsProcessor,
    check_exact_temperature_scoring,
    distinct_fraction,
    group_ladder,
    reward_by_rung,
    row_temperatures,
    scale_hidden_states,
    zero_std_fraction,
)

TEMPERATURE_KEY = "ext_temperature"


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

    def __init__(self, model, reward_funcs=None, args: GRPOExtConfig | None = None, train_dataset=None, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = GRPOExtConfig(f"{str(name).split('/')[-1]}-GRPO")
        if not isinstance(args, GRPOExtConfig):
            raise TypeError(f"`args` must be a GRPOExtConfig, got {type(args).__name__}.")
        if reward_funcs is None and args.reward_objectives:
            reward_funcs = weighted_reward_from_spec(args.reward_objectives, novelty_ngram=args.novelty_ngram)
        if args.uses_ladder:
            for name in ("tools", "rollout_func", "environment_factory"):
                if kwargs.get(name) is not None:
                    raise ValueError(
                        f"The temperature ladder (temperature_schedule={args.temperature_schedule!r}) runs inside "
                        f"transformers `generate`; `{name}` calls generation on its own rows and is not supported "
                        "with it. Use temperature_schedule='constant'."
                    )

        reward_funcs, weights, names, objectives = self._expand_objectives(reward_funcs, args)
        if objectives and train_dataset is not None and getattr(train_dataset, "column_names", None) is not None:
            check_required_columns(objectives, train_dataset.column_names)

        # TRL reads `reward_weights` once, in __init__; restore the user's value so the config can be reused.
        user_weights = args.reward_weights
        if objectives:
            args.reward_weights = weights
        try:
            super().__init__(model, reward_funcs, args, train_dataset, **kwargs)
        finally:
            args.reward_weights = user_weights
        if objectives:
            self.reward_func_names = names  # reward-model objectives are named by their objective, not model id

        self._objective_names = list(objectives)
        self._initial_reward_weights = self.reward_weights.clone()
        self._final_reward_weights = self._resolve_final_weights(args, self.reward_func_names, self.reward_weights)
        self._advantage_estimator = (
            None if args.advantage_estimator == "zscore" else get_advantage_estimator(args.advantage_estimator)
        )
        self._sampling_temperatures: torch.Tensor | None = None  # rows being generated now
        self._scoring_temperatures: torch.Tensor | None = None  # rows to score at their own temperature
        self._hooked_temperatures: torch.Tensor | None = None  # the same, only while log-probs are computed
        self._scoring_cursor = 0
        self._captured_rewards: torch.Tensor | None = None
        if args.uses_ladder and args.ladder_logprob_temperature == "sampled":
            self._install_scoring_hooks()
        if args.temperature_control != "none":
            self.add_callback(LadderController.from_config(args))

    # ------------------------------------------------------------------ objectives
    def _expand_objectives(self, reward_funcs, args: GRPOExtConfig):
        """Expand every `WeightedReward` into one TRL reward function per objective, with its weight.

        `args.reward_weights`, when set, is aligned with the caller's list and multiplies a WeightedReward's weights.
        Returns (funcs, weights, names, objectives-by-name); objectives is empty when there is nothing to expand.
        """
        funcs_in = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
        if not any(isinstance(f, WeightedReward) for f in funcs_in):
            for field_name in ("objective_weights", "objective_weights_final"):
                if getattr(args, field_name):
                    raise ValueError(
                        f"`{field_name}` sets weights by objective name, but no WeightedReward or "
                        "`reward_objectives` defines named objectives; use `reward_weights` for plain reward functions."
                    )
            return reward_funcs, None, None, {}
        outer = args.reward_weights or [1.0] * len(funcs_in)
        if len(outer) != len(funcs_in):
            raise ValueError(
                f"`reward_weights` has {len(outer)} entries but {len(funcs_in)} reward functions were given."
            )
        funcs, weights, names, objectives = [], [], [], {}
        for func, outer_weight in zip(funcs_in, outer):
            if isinstance(func, WeightedReward):
                expanded = zip(*func.expand())
            else:
                expanded = [(func, 1.0, _reward_func_name(func))]
            for sub_func, weight, name in expanded:
                if name in objectives:
                    raise ValueError(f"Objective name {name!r} appears twice; objective names must be unique.")
                if callable(sub_func) and isinstance(func, WeightedReward):
                    if getattr(sub_func, "needs_group", False):
                        sub_func = self._gather_group(sub_func, args)
                    sub_func = guard_objective(name, sub_func, args.reward_error_policy)
                objectives[name] = sub_func
                funcs.append(sub_func)
                weights.append(float(outer_weight) * float(weight))
                names.append(name)
        for name, weight in (args.objective_weights or {}).items():
            if name not in objectives:
                raise ValueError(
                    f"`objective_weights` names unknown objective {name!r}; valid names: {sorted(objectives)}."
                )
            weights[names.index(name)] = weight
        if all(w == 0 for w in weights):
            raise ValueError(f"All objective weights are zero ({dict(zip(names, weights))}); set at least one.")
        return funcs, weights, names, objectives

    def _gather_group(self, func, args: GRPOExtConfig):
        """Call a group objective on the whole global batch (groups may straddle processes) and keep this slice."""

        @functools.wraps(func)
        def call_on_global_batch(prompts, completions, **kwargs):
            n_local = len(prompts)
            columns = {k: gather_object(v) for k, v in kwargs.items() if isinstance(v, list) and len(v) == n_local}
            others = {k: v for k, v in kwargs.items() if k not in columns}
            num_generations = self.num_generations if self.model.training else self.num_generations_eval
            rewards = func(
                prompts=gather_object(prompts),
                completions=gather_object(completions),
                num_generations=num_generations,
                novelty_ngram=args.novelty_ngram,
                **columns,
                **others,
            )
            start = self.accelerator.process_index * n_local
            return list(rewards)[start : start + n_local]

        return call_on_global_batch

    @staticmethod
    def _resolve_final_weights(args: GRPOExtConfig, names, initial: torch.Tensor) -> torch.Tensor | None:
        """The weight vector at the last step: the initial weights with `objective_weights_final` applied by name."""
        final = args.objective_weights_final
        if not final:
            return None
        unknown = set(final) - set(names)
        if unknown:
            raise ValueError(
                f"`objective_weights_final` names unknown objectives {sorted(unknown)}; valid names: {names}."
            )
        weights = initial.clone()
        for name, weight in final.items():
            weights[names.index(name)] = weight
        return weights

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
        # TRL averages a reward-side metric over processes; an error count must add up instead.
        if name.endswith("/errors") and name[len("rewards/") : -len("/errors")] in self._objective_names:
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
        temps = self._sampling_temperatures
        if temps is None:
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)
        if len(prompt_ids) != len(temps):
            raise RuntimeError(
                f"The temperature ladder holds {len(temps)} row temperatures but generation was asked for "
                f"{len(prompt_ids)} rows; only TRL's single-turn transformers generation is supported with a ladder."
            )
        with self._row_temperature_generation(temps):
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)

    @contextlib.contextmanager
    def _row_temperature_generation(self, temps: torch.Tensor):
        """Sample row i at temps[i] in the one `generate` call TRL makes.

        The generation config gets temperature 1.0 (so transformers adds no scalar temperature warper) and
        `generate` gets a RowTemperatureLogitsProcessor, which transformers applies before top-k / top-p / min-p.
        """
        model = self.accelerator.unwrap_model(self.model_wrapped)
        saved_config, saved_kwargs = self.generation_config, self.generation_kwargs
        self.generation_config = copy.deepcopy(saved_config)
        self.generation_config.temperature = 1.0
        self.generation_kwargs = {**saved_kwargs, "temperature": 1.0}
        processor = RowTemperatureLogitsProcessor(temps.to(self.accelerator.device))
        original_generate = model.generate

        def generate(*args, logits_processor=None, **kwargs):
            processors = LogitsProcessorList([processor, *(logits_processor or [])])
            return original_generate(*args, logits_processor=processors, **kwargs)

        model.generate = generate
        try:
            yield
        finally:
            del model.generate  # drop the instance attribute: the class method shows through again
            self.generation_config, self.generation_kwargs = saved_config, saved_kwargs

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

    def _get_per_token_logps_and_entropies(self, model, input_ids, *args, **kwargs):
        if self._scoring_temperatures is None:
            return super()._get_per_token_logps_and_entropies(model, input_ids, *args, **kwargs)
        if len(self._scoring_temperatures) != input_ids.size(0):
            raise RuntimeError(
                f"{len(self._scoring_temperatures)} row temperatures for {input_ids.size(0)} rows being scored."
            )
        self._scoring_cursor = 0
        self._hooked_temperatures = self._scoring_temperatures
        try:
            result = super()._get_per_token_logps_and_entropies(model, input_ids, *args, **kwargs)
        finally:
            self._hooked_temperatures = None
        if self._scoring_cursor != input_ids.size(0):
            raise RuntimeError(
                f"Temperature scoring saw {self._scoring_cursor} of {input_ids.size(0)} rows: the backbone hook did "
                "not run once per chunk (unsupported model wrapper?)."
            )
        return result

    def _compute_loss(self, model, inputs):
        if TEMPERATURE_KEY not in inputs:
            return super()._compute_loss(model, inputs)
        self._scoring_temperatures = inputs[TEMPERATURE_KEY]
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._scoring_temperatures = None

    # ------------------------------------------------------------------ rewards and advantages
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._captured_rewards = rewards_per_func  # gathered over processes: (global batch, num reward funcs)
        return rewards_per_func

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        self._update_reward_weights()
        ladder = temps = None
        if self.args.uses_ladder:
            ladder = self.current_ladder(num_generations)
            temps = row_temperatures(ladder, len(inputs), self.accelerator.process_index)
            self._sampling_temperatures = temps
            if self.args.ladder_logprob_temperature == "sampled":
                self._scoring_temperatures = temps  # old-policy and reference log-probs, in generation order
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._sampling_temperatures = None
            self._scoring_temperatures = None

        rewards_per_func, self._captured_rewards = self._captured_rewards, None
        if self._advantage_estimator is not None:
            self._replace_advantages(output, rewards_per_func, num_generations)
        if mode == "train":
            self._update_ladder_control(rewards_per_func, num_generations)
        self._log_extension_metrics(mode, output, rewards_per_func, num_generations, ladder)
        if temps is not None and self.args.ladder_logprob_temperature == "sampled":
            output[TEMPERATURE_KEY] = temps.to(self.accelerator.device)  # follows the rows through shuffle/split
        return output

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

    def _log_extension_metrics(self, mode, output, rewards_per_func, num_generations: int, ladder) -> None:
        metrics = self._metrics[mode]
        advantages = self.accelerator.gather(output["advantages"]).float()
        metrics["advantages/mean"].append(advantages.mean().item())
        metrics["advantages/std"].append(advantages.std().item() if advantages.numel() > 1 else 0.0)
        metrics["advantages/abs_max"].append(advantages.abs().max().item())
        if self._final_reward_weights is not None:
            for name, weight in zip(self.reward_func_names, self.reward_weights.tolist()):
                metrics[f"objectives/{name}/weight"].append(weight)

        # Group diversity: fraction of distinct completions per group, on the global batch.
        ids, mask = output["completion_ids"], output["completion_mask"]
        local = [tuple(row[m.bool()].tolist()) for row, m in zip(ids, mask)]
        metrics["ladder/distinct_frac"].append(distinct_fraction(gather_object(local), num_generations))

        if ladder is None:
            return
        metrics["ladder/t_min"].append(min(ladder))
        metrics["ladder/t_max"].append(max(ladder))
        weights = self.reward_weights.to(rewards_per_func.device)
        rewards = (rewards_per_func * weights).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        for rung, reward in enumerate(reward_by_rung(rewards, num_generations).tolist()):
            metrics[f"ladder/reward_rung_{rung}"].append(reward)


def _reward_func_name(func) -> str:
    """The name TRL gives a reward function: a model's id, a path's last part, or the callable's name."""
    if isinstance(func, str):
        return func.rstrip("/").split("/")[-1]
    config = getattr(func, "config", None)
    if config is not None:
        return str(config._name_or_path).rstrip("/").split("/")[-1]
    return get_callable_name(func)
