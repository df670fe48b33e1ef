"""Every field GRPOExtConfig adds is validated: a bad value raises ValueError naming the field and the value.

Config-only cases build no model and take milliseconds. The trainer-time cases (dataset columns, `tools`, weights
that name objectives of a `WeightedReward`) raise before TRL loads the model, except `objective_weights_final`,
which is resolved after it.
"""

import math

import pytest
from datasets import Dataset
from trl import GRPOConfig

from tests.helpers import digit_reward, length_reward, prompt_dataset, tiny_kwargs, tiny_tokenizer_cached
from trl_grpo_ext import GRPOExtConfig, GRPOExtTrainer
from trl_grpo_ext.kit import resolve_model_path
from trl_grpo_ext.rewards import WeightedReward, accuracy
from trl_grpo_ext.sampling import group_ladder

NAN, INF = math.nan, math.inf
LADDER = {"temperature_schedule": "linear"}
OBJECTIVES = {"reward_objectives": {"accuracy": 0.7, "readability": 0.3}}
CONTROL = {"temperature_schedule": "linear", "temperature_control": "zero_std"}
LEARNED = {"reward_objectives": {"accuracy": 0.5, "learned_preference": 0.5}}
GOLD = {"type": "gold", "objective": "accuracy"}
RM = {"model": "tiny:tiny", "labeler": GOLD}


def _config(tmp_path, **overrides) -> GRPOExtConfig:
    return GRPOExtConfig(**tiny_kwargs(tmp_path, **overrides))


def _raises(tmp_path, overrides) -> str:
    with pytest.raises(ValueError) as info:
        _config(tmp_path, **overrides)
    return str(info.value)


# (field, overrides, fragment of the bad value that the message must show). tiny_kwargs has num_generations=4.
INVALID = [
    # temperature ladder
    ("temperature_schedule", {"temperature_schedule": "cosine"}, "'cosine'"),
    ("temperature_schedule", {"temperature_schedule": "Linear"}, "'Linear'"),
    ("temperature_schedule", {"temperature_schedule": None}, "None"),
    ("temperature_range", {"temperature_range": [0.0, 1.0]}, "[0.0, 1.0]"),
    ("temperature_range", {"temperature_range": [-0.5, 1.0]}, "[-0.5, 1.0]"),
    ("temperature_range", {"temperature_range": [1.0, 0.5]}, "[1.0, 0.5]"),
    ("temperature_range", {"temperature_range": [0.7]}, "[0.7]"),
    ("temperature_range", {"temperature_range": [0.5, 0.7, 1.0]}, "[0.5, 0.7, 1.0]"),
    ("temperature_range", {"temperature_range": [0.7, INF]}, "inf"),
    ("temperature_range", {"temperature_range": [NAN, 1.0]}, "nan"),
    ("temperature_range", {"temperature_range": 0.7}, "0.7"),
    ("temperature_range", {"temperature_range": "[0.7, 1.0"}, "[0.7, 1.0"),
    ("group_temperatures", {"group_temperatures": [0.7, 1.0]}, "[0.7, 1.0]"),
    ("group_temperatures", {"group_temperatures": [0.5, 0.7, 0.9, 1.1, 1.3]}, "[0.5, 0.7, 0.9, 1.1, 1.3]"),
    ("group_temperatures", {"group_temperatures": [0.7, 0.8, 0.9, 0.0]}, "0.0"),
    ("group_temperatures", {"group_temperatures": [0.7, 0.8, -0.9, 1.0]}, "-0.9"),
    ("group_temperatures", {"group_temperatures": [0.7, 0.8, 0.9, INF]}, "inf"),
    ("group_temperatures", {"group_temperatures": [0.7, NAN, 0.9, 1.0]}, "nan"),
    ("group_temperatures", {"group_temperatures": {"slot0": 0.7}}, "{'slot0': 0.7}"),
    ("group_temperatures", {"group_temperatures": "[0.7, 0.8"}, "[0.7, 0.8"),
    ("temperature_range_final", {**LADDER, "temperature_range_final": [0.0, 1.0]}, "[0.0, 1.0]"),
    ("temperature_range_final", {**LADDER, "temperature_range_final": [1.2, 0.8]}, "[1.2, 0.8]"),
    ("temperature_range_final", {**LADDER, "temperature_range_final": [0.9]}, "[0.9]"),
    ("temperature_range_final", {**LADDER, "temperature_range_final": [0.5, INF]}, "inf"),
    ("temperature_range_final", {**LADDER, "temperature_range_final": "oops"}, "oops"),
    ("ladder_logprob_temperature", {**LADDER, "ladder_logprob_temperature": "exact"}, "'exact'"),
    ("ladder_logprob_temperature", {"ladder_logprob_temperature": None}, "None"),
    # closed-loop ladder
    ("temperature_control", {**LADDER, "temperature_control": "entropy"}, "'entropy'"),
    ("temperature_control", {"temperature_control": None}, "None"),
    ("temperature_control_target", {**CONTROL, "temperature_control_target": 1.5}, "1.5"),
    ("temperature_control_target", {**CONTROL, "temperature_control_target": NAN}, "nan"),
    ("temperature_control_rate", {**CONTROL, "temperature_control_rate": -0.5}, "-0.5"),
    ("temperature_control_rate", {**CONTROL, "temperature_control_rate": "fast"}, "'fast'"),
    ("temperature_control_tolerance", {**CONTROL, "temperature_control_tolerance": -0.1}, "-0.1"),
    ("temperature_bounds", {**CONTROL, "temperature_bounds": [0.0, 2.0]}, "[0.0, 2.0]"),
    ("temperature_bounds", {**CONTROL, "temperature_bounds": [0.8, 2.0]}, "[0.8, 2.0]"),
    ("temperature_bounds", {**CONTROL, "temperature_bounds": [0.1, 3.0], "use_vllm": True}, "3.0"),
    # advantages
    ("advantage_estimator", {"advantage_estimator": "ranked"}, "'ranked'"),
    ("advantage_estimator", {"advantage_estimator": ""}, "''"),
    ("advantage_estimator", {"advantage_estimator": None}, "None"),
    ("advantage_estimator", {"advantage_estimator": 3}, "3"),
    ("advantage_estimator", {"advantage_estimator": "no_such_module_xyz:fn"}, "no_such_module_xyz:fn"),
    ("advantage_estimator", {"advantage_estimator": "trl_grpo_ext.advantages:nope"}, "nope"),
    ("advantage_estimator", {"advantage_estimator": "trl_grpo_ext.config:TEMPERATURE_SCHEDULES"}, "TEMPERATURE"),
    # objectives
    ("reward_objectives", {"reward_objectives": {}}, "{}"),
    ("reward_objectives", {"reward_objectives": ["accuracy"]}, "['accuracy']"),
    ("reward_objectives", {"reward_objectives": '{"accuracy": 1'}, '{"accuracy": 1'),
    ("reward_objectives", {"reward_objectives": {"accuracy": "heavy"}}, "'heavy'"),
    ("reward_objectives", {"reward_objectives": {"accuracy": NAN}}, "nan"),
    ("reward_objectives", {"reward_objectives": {"accuracy": INF}}, "inf"),
    ("reward_objectives", {"reward_objectives": {"accuracy": 0, "novelty": 0.0}}, "'accuracy': 0.0"),
    ("objective_weights", {"objective_weights": {}}, "{}"),
    ("objective_weights", {"objective_weights": {"accuracy": NAN}}, "nan"),
    ("objective_weights", {"objective_weights": {"accuracy": INF}}, "inf"),
    ("objective_weights", {"objective_weights": {"accuracy": -INF}}, "-inf"),
    ("objective_weights", {"objective_weights": {"accuracy": None}}, "None"),
    (
        "objective_weights",
        {**OBJECTIVES, "objective_weights": {"accuracy": 0.0, "readability": 0}},
        "'readability': 0.0",
    ),
    ("objective_weights", {"objective_weights": "{accuracy: 1}"}, "{accuracy: 1}"),
    ("objective_weights", {**OBJECTIVES, "objective_weights": {"acuracy": 1.0}}, "acuracy"),
    ("objective_weights_final", {"objective_weights_final": {}}, "{}"),
    ("objective_weights_final", {"objective_weights_final": {"accuracy": NAN}}, "nan"),
    ("objective_weights_final", {"objective_weights_final": {"accuracy": -INF}}, "-inf"),
    ("objective_weights_final", {"objective_weights_final": {"accuracy": "x"}}, "'x'"),
    (
        "objective_weights_final",
        {**OBJECTIVES, "objective_weights_final": {"accuracy": 0, "readability": 0}},
        "'accuracy': 0.0",
    ),
    ("objective_weights_final", {**OBJECTIVES, "objective_weights_final": {"novelty": 1.0}}, "novelty"),
    ("novelty_ngram", {"novelty_ngram": 0}, "0"),
    ("novelty_ngram", {"novelty_ngram": -2}, "-2"),
    ("novelty_ngram", {"novelty_ngram": 2.5}, "2.5"),
    ("novelty_ngram", {"novelty_ngram": "3"}, "'3'"),
    ("novelty_ngram", {"novelty_ngram": True}, "True"),
    ("novelty_ngram", {"novelty_ngram": None}, "None"),
    ("reward_error_policy", {"reward_error_policy": "ignore"}, "'ignore'"),
    ("reward_error_policy", {"reward_error_policy": "RAISE"}, "'RAISE'"),
    ("reward_error_policy", {"reward_error_policy": None}, "None"),
    # principles objective
    ("principles", {"principles": []}, "[]"),
    ("principles", {"principles": "Is it polite?"}, "'Is it polite?'"),
    ("principles", {"principles": '["Is it polite?"'}, '["Is it polite?"'),
    ("principles", {"principles": [""]}, "''"),
    ("principles", {"principles": [3]}, "3"),
    ("principles", {"principles": [{"question": "Q?", "weight": -1}]}, "-1"),
    ("principles", {"principles": [{"question": "Q?", "weight": NAN}]}, "nan"),
    ("principles", {"principles": [{"question": "Q?", "weight": 0}]}, "[0.0]"),
    ("principles", {"principles": [{"question": "Q?", "rubric": "x"}]}, "'rubric'"),
    ("principles", {"principles": [{"question": "Q?", "name": "a/b"}]}, "'a/b'"),
    ("principles", {"principles": ["Is it kind?", "Is it kind?"]}, "'is_it_kind'"),
    ("principles", {"principles": ["Is it kind?"]}, "None"),  # reward_objectives does not name 'principles'
    ("judge", {"judge": {}}, "{}"),
    ("judge", {"judge": "tiny:tiny"}, "'tiny:tiny'"),
    ("judge", {"judge": ["tiny:tiny"]}, "['tiny:tiny']"),
    ("judge", {"judge": {"batch_size": 4}}, "'batch_size': 4"),
    ("judge", {"judge": {"model": ""}}, "''"),
    ("judge", {"judge": {"model": "tiny:tiny", "batch_size": 0}}, "0"),
    ("judge", {"judge": {"model": "tiny:tiny", "dtype": "float8"}}, "'float8'"),
    ("judge", {"judge": {"model": "tiny:tiny", "chat": "yes"}}, "'yes'"),
    ("judge", {"judge": {"model": "tiny:tiny", "timeout": 5}}, "'timeout'"),  # an endpoint key on a local judge
    ("judge", {"judge": {"model": "tiny:tiny", "template": "{completion}?"}}, "{completion}?"),
    ("judge", {"judge": {"model": "tiny:tiny", "template": "{completion} {principle} {rubric}"}}, "{rubric}"),
    ("judge", {"judge": {"model": "tiny:tiny", "template": "{completion {principle}"}}, "{completion {principle}"),
    ("judge", {"judge": {"base_url": "ftp://host/v1", "model": "m"}}, "'ftp://host/v1'"),
    ("judge", {"judge": {"base_url": "http://h/v1", "model": "m", "timeout": 0}}, "0"),
    ("judge", {"judge": {"base_url": "http://h/v1", "model": "m", "timeout": INF}}, "inf"),
    ("judge", {"judge": {"base_url": "http://h/v1", "model": "m", "max_retries": -1}}, "-1"),
    ("judge", {"judge": {"base_url": "http://h/v1", "model": "m", "backoff": -0.5}}, "-0.5"),
    ("judge", {"judge": {"base_url": "http://h/v1", "model": "m", "max_concurrency": 0}}, "0"),
    ("judge", {"judge": {"base_url": "http://h/v1", "model": "m", "top_logprobs": 2.5}}, "2.5"),
    ("judge", {"judge": {"base_url": "http://h/v1", "model": "m", "api_key_env": "sk-abc"}}, "6-character string"),
    ("judge", {"judge": {"base_url": "http://h/v1", "model": "m", "dtype": "auto"}}, "'dtype'"),
    ("judge", {"judge": '{"model": "tiny:tiny"'}, '{"model": "tiny:tiny"'),
    ("judge", {"judge": {"model": "tiny:tiny"}}, "None"),  # reward_objectives does not name 'principles'
    # same math, less compute
    ("share_prompt", {"share_prompt": "yes", "gradient_checkpointing": False}, "'yes'"),
    ("share_prompt", {"share_prompt": True, "gradient_checkpointing": True}, "activation_checkpointing"),
    ("skip_zero_advantage", {"skip_zero_advantage": 1}, "1"),
    ("skip_zero_advantage", {"skip_zero_advantage": True, "beta": 0.04}, "0.04"),
    ("dynamic_sampling", {"dynamic_sampling": "yes"}, "'yes'"),
    ("dynamic_sampling_max_rounds", {"dynamic_sampling_max_rounds": 0}, "0"),
    ("log_tied_groups", {"log_tied_groups": 1}, "1"),
    # online reward model (the learned_preference objective)
    ("online_reward_model", {**LEARNED, "online_reward_model": {}}, "{}"),
    ("online_reward_model", {**LEARNED, "online_reward_model": "tiny:tiny"}, "'tiny:tiny'"),
    ("online_reward_model", {**LEARNED, "online_reward_model": '{"model": "tiny:tiny"'}, '{"model": "tiny:tiny"'),
    ("online_reward_model", {**LEARNED, "online_reward_model": {"labeler": GOLD}}, "None"),  # no model
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "budget": 8}}, "'budget'"),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "model": "smollm2:135m-instruct"}}, "smollm2"),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "model": "tiny:huge"}}, "'tiny:huge'"),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "num_generations": 4}}, "num_generations"),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "update_every": -1}}, "-1"),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "label_budget": 2.5}}, "2.5"),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "pairs_per_update": 0}}, "0"),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "heldout_fraction": 1.0}}, "1.0"),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "learning_rate": 0.0}}, "0.0"),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "margin": -0.1}}, "-0.1"),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "selector": "best"}}, "'best'"),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "error_policy": "ignore"}}, "'ignore'"),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "name": "a/b"}}, "'a/b'"),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "labeler": {"type": "crowd"}}}, "'crowd'"),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "labeler": {"type": "gold"}}}, "'gold'"),
    (
        "online_reward_model",
        {**LEARNED, "online_reward_model": {**RM, "labeler": {"type": "gold", "objective": "acuracy"}}},
        "'acuracy'",
    ),
    (
        "online_reward_model",
        {**LEARNED, "online_reward_model": {**RM, "labeler": {"type": "gold", "objective": "novelty"}}},
        "'novelty'",
    ),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "labeler": {**GOLD, "path": "x"}}}, "'path'"),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "labeler": {"type": "judge"}}}, "'judge'"),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "labeler": {"type": "queue"}}}, "None"),
    (
        "online_reward_model",
        {**LEARNED, "online_reward_model": {**RM, "labeler": {"type": "queue", "path": "l.jsonl", "timeout": -1}}},
        "-1",
    ),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "seed_pairs": [{"prompt": "a"}]}}, "'a'"),
    ("online_reward_model", {**LEARNED, "online_reward_model": {**RM, "seed_pairs_file": "nope.jsonl"}}, "nope.jsonl"),
    (
        "online_reward_model",
        {**LEARNED, "online_reward_model": {"model": "tiny:tiny", "label_budget": 8}},  # no labeler: frozen
        "'label_budget'",
    ),
    ("online_reward_model", {**LEARNED, "online_reward_model": None}, "'learned_preference'"),
    ("online_reward_model", {"online_reward_model": RM}, "None"),  # reward_objectives does not name it
    (
        "online_reward_model",
        {**LEARNED, "online_reward_model": RM, "restore_callback_states_from_checkpoint": True},
        "restore_callback_states_from_checkpoint=True",
    ),
]


def _case_id(case) -> str:
    field_name, overrides, _ = case
    return f"{field_name}={overrides[field_name]!r}"


@pytest.mark.parametrize("field_name, overrides, bad_value", INVALID, ids=[_case_id(c) for c in INVALID])
def test_invalid_value_names_field_and_value(field_name, overrides, bad_value, tmp_path):
    message = _raises(tmp_path, overrides)
    assert field_name in message, message
    assert bad_value in message, message


def test_every_new_field_has_an_invalid_case():
    new_fields = set(GRPOExtConfig.__dataclass_fields__) - set(GRPOConfig.__dataclass_fields__)
    assert new_fields == {case[0] for case in INVALID}


# Values that cannot be turned into a temperature at all: the same rule (ValueError naming field and value) holds.
UNCONVERTIBLE = [
    ("temperature_range", {"temperature_range": ["cold", 1.0]}, "cold"),
    ("temperature_range", {"temperature_range": [None, 1.0]}, "None"),
    ("temperature_range_final", {**LADDER, "temperature_range_final": [0.5, "hot"]}, "hot"),
    ("group_temperatures", {"group_temperatures": [0.7, "warm", 0.9, 1.0]}, "warm"),
    ("group_temperatures", {"group_temperatures": [0.7, None, 0.9, 1.0]}, "None"),
]


@pytest.mark.parametrize("field_name, overrides, bad_value", UNCONVERTIBLE, ids=[_case_id(c) for c in UNCONVERTIBLE])
def test_unconvertible_temperature_names_field_and_value(field_name, overrides, bad_value, tmp_path):
    message = _raises(tmp_path, overrides)
    assert field_name in message, message
    assert bad_value in message, message


def test_unknown_reward_objective_names_the_field(tmp_path):
    message = _raises(tmp_path, {"reward_objectives": {"acuracy": 1.0}})
    assert "acuracy" in message, message
    assert "reward_objectives" in message, message


def test_ladder_without_temperature_range_is_refused(tmp_path):
    # Accepted today; the trainer's first generation then calls group_ladder, which fails with a TypeError.
    with pytest.raises(TypeError):
        group_ladder(4, schedule="linear", temperature=1.0, temperature_range=None)
    message = _raises(tmp_path, {**LADDER, "temperature_range": None})
    assert "temperature_range" in message and "None" in message, message


def test_group_temperatures_must_fit_the_eval_group_size(tmp_path):
    # Accepted today; the first evaluation then asks group_ladder for num_generations_eval=2 temperatures and fails.
    with pytest.raises(ValueError, match="group_temperatures"):
        group_ladder(2, schedule="constant", temperature=1.0, temperature_range=[0.7, 1.0], group_temperatures=[1] * 4)
    message = _raises(tmp_path, {"group_temperatures": [0.7, 0.8, 0.9, 1.0], "num_generations_eval": 2})
    assert "group_temperatures" in message and "num_generations_eval" in message, message


# ----------------------------------------------------------------------------------------------------- conflicts
@pytest.mark.parametrize("backend", ["use_transformers_continuous_batching"])  # TRL maps the deprecated paged flag
@pytest.mark.parametrize(
    "ladder",
    [{"temperature_schedule": "linear"}, {"temperature_schedule": "geometric"}, {"group_temperatures": [1.0] * 4}],
    ids=["linear", "geometric", "group_temperatures"],
)
def test_ladder_refuses_continuous_batching(ladder, backend, tmp_path):
    message = _raises(tmp_path, {**ladder, backend: True})
    assert f"`{backend}=True`" in message and "generate_batch" in message, message
    assert "temperature_schedule=" in message, message
    # TRL's own generate path, or a constant schedule with the backend, is fine.
    assert _config(tmp_path, **ladder).uses_ladder
    assert not _config(tmp_path, **{backend: True}).uses_ladder


@pytest.mark.parametrize(
    "ladder",
    [
        {"temperature_schedule": "linear", "temperature_range": [0.7, 1.0]},
        {"temperature_schedule": "geometric", "temperature_range": [0.01, 2.0]},
        {"temperature_schedule": "linear", "temperature_range": [0.7, 1.0], "temperature_range_final": [0.3, 2.0]},
        {"group_temperatures": [0.01, 0.5, 1.0, 2.0]},
    ],
)
def test_ladder_on_vllm_within_its_range_is_accepted(ladder, tmp_path):
    assert _config(tmp_path, use_vllm=True, **ladder).uses_ladder


@pytest.mark.parametrize(
    "field, ladder",
    [
        ("temperature_range", {"temperature_schedule": "linear", "temperature_range": [0.7, 2.5]}),
        ("temperature_range", {"temperature_schedule": "geometric", "temperature_range": [0.005, 1.0]}),
        ("temperature_range_final", {"temperature_schedule": "linear", "temperature_range_final": [0.7, 3.0]}),
        ("group_temperatures", {"group_temperatures": [0.7, 0.8, 0.9, 2.1]}),
    ],
)
def test_ladder_on_vllm_outside_its_range_is_refused(field, ladder, tmp_path):
    message = _raises(tmp_path, {**ladder, "use_vllm": True})
    assert f"`{field}`" in message and "[0.01, 2.0]" in message and "use_vllm=True" in message, message
    assert _config(tmp_path, **ladder).uses_ladder  # transformers `generate` takes any temperature > 0


@pytest.mark.parametrize("estimator", ["rank", "tests.helpers:digit_reward"])
def test_non_zscore_estimator_refuses_batch_scaling(estimator, tmp_path):
    message = _raises(tmp_path, {"advantage_estimator": estimator, "scale_rewards": "batch"})
    assert "advantage_estimator" in message and repr(estimator) in message, message
    assert "scale_rewards='batch'" in message, message
    for scale in ("group", "none", True, False):
        assert _config(tmp_path, advantage_estimator=estimator, scale_rewards=scale).advantage_estimator == estimator
    assert _config(tmp_path, scale_rewards="batch").advantage_estimator == "zscore"


def test_temperature_range_final_needs_a_ladder(tmp_path):
    message = _raises(tmp_path, {"temperature_range_final": [0.5, 0.9]})
    assert "temperature_range_final" in message and "'constant'" in message, message
    message = _raises(tmp_path, {"group_temperatures": [0.7, 0.8, 0.9, 1.0], "temperature_range_final": [0.5, 0.9]})
    assert "temperature_range_final" in message and "group_temperatures" in message, message
    for schedule in ("linear", "geometric"):
        assert _config(tmp_path, temperature_schedule=schedule, temperature_range_final=[0.5, 0.9])


@pytest.mark.parametrize("num_generations, temps", [(4, [0.7, 1.0, 1.3]), (2, [0.7, 1.0, 1.3]), (3, [1.0, 2.0])])
def test_group_temperatures_length_must_be_num_generations(num_generations, temps, tmp_path):
    message = _raises(
        tmp_path, {"num_generations": num_generations, "per_device_train_batch_size": 12, "group_temperatures": temps}
    )
    assert "group_temperatures" in message and f"num_generations={num_generations}" in message, message
    assert str(temps) in message, message


@pytest.mark.parametrize("field_name", ["objective_weights", "objective_weights_final"])
def test_weights_naming_an_unknown_objective(field_name, tmp_path):
    message = _raises(tmp_path, {**OBJECTIVES, field_name: {"accuracy": 1.0, "novelty": 0.5}})
    assert field_name in message and "novelty" in message, message
    assert "accuracy" in message and "readability" in message, message  # the valid names are listed


@pytest.mark.parametrize("field_name", ["reward_objectives", "objective_weights", "objective_weights_final"])
def test_all_zero_weights(field_name, tmp_path):
    # objective_weights(_final) override some objectives: only the combined vector must be non-zero (issue 13, item 4).
    weights = {"accuracy": 0.0, "readability": -0.0}
    overrides = {field_name: weights} if field_name == "reward_objectives" else {**OBJECTIVES, field_name: weights}
    message = _raises(tmp_path, overrides)
    assert field_name in message and "non-zero" in message, message
    if field_name != "reward_objectives":
        assert getattr(_config(tmp_path, **{**OBJECTIVES, field_name: {"accuracy": 0}}), field_name) == {
            "accuracy": 0.0
        }


@pytest.mark.parametrize("field_name", ["reward_objectives", "objective_weights", "objective_weights_final"])
@pytest.mark.parametrize("bad", [NAN, INF, -INF, "nan", "inf"])
def test_nan_and_inf_weights(field_name, bad, tmp_path):
    overrides = {field_name: {"accuracy": bad}}
    if field_name != "reward_objectives":
        overrides.update(OBJECTIVES)
    message = _raises(tmp_path, overrides)
    assert f"`{field_name}['accuracy']`" in message and "finite" in message, message
    assert str(float(bad)) in message, message


def test_valid_values_are_accepted_and_normalised(tmp_path):
    args = _config(
        tmp_path,
        temperature_schedule="geometric",
        temperature_range="[0.5, 2]",
        temperature_range_final=(0.8, 1.2),
        ladder_logprob_temperature="base",
        advantage_estimator="trl_grpo_ext.advantages:rank_advantages",
        reward_objectives='{"accuracy": 1, "novelty": 0.25}',
        objective_weights={"accuracy": 0.5},
        objective_weights_final={"novelty": -1},
        novelty_ngram=2,
        reward_error_policy="skip",
    )
    assert args.temperature_range == [0.5, 2.0] and args.temperature_range_final == [0.8, 1.2]
    assert args.reward_objectives == {"accuracy": 1.0, "novelty": 0.25}
    assert args.objective_weights == {"accuracy": 0.5} and args.objective_weights_final == {"novelty": -1.0}
    assert _config(tmp_path, group_temperatures="[0.5, 1, 1.5, 2]").group_temperatures == [0.5, 1.0, 1.5, 2.0]


# ------------------------------------------------------------------------------------------- TRL's checks stay TRL's
@pytest.mark.parametrize(
    "overrides",
    [
        {"per_device_train_batch_size": 4, "num_generations": 3},
        {"per_device_train_batch_size": 6, "num_generations": 4, "steps_per_generation": 1},
        {"per_device_train_batch_size": 4, "num_generations": 3, "temperature_schedule": "linear"},
        {"per_device_train_batch_size": 4, "num_generations": 1},
    ],
    ids=["4_rows_groups_of_3", "6_rows_groups_of_4", "with_ladder", "num_generations_1"],
)
def test_trl_batch_errors_are_unchanged(overrides, tmp_path):
    trl_overrides = {k: v for k, v in overrides.items() if k in GRPOConfig.__dataclass_fields__}
    with pytest.raises(ValueError) as trl_error:
        GRPOConfig(**tiny_kwargs(tmp_path, **trl_overrides))
    with pytest.raises(ValueError) as ext_error:
        _config(tmp_path, **overrides)
    assert str(ext_error.value) == str(trl_error.value)


# ------------------------------------------------------------------------------------------- trainer-time checks
def _trainer(tmp_path, reward_funcs, dataset=None, **kwargs):
    args = kwargs.pop("args", None) or _config(tmp_path)
    return GRPOExtTrainer(
        model=resolve_model_path("tiny:tiny"),
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=prompt_dataset(8) if dataset is None else dataset,
        processing_class=tiny_tokenizer_cached(),
        **kwargs,
    )


def _without_answer() -> Dataset:
    return prompt_dataset(8).remove_columns("answer")


def test_missing_dataset_column_is_named_before_training(tmp_path):
    with pytest.raises(ValueError) as info:
        _trainer(tmp_path, WeightedReward({"accuracy": accuracy}), _without_answer())
    message = str(info.value)
    assert "'accuracy'" in message and "'answer'" in message and "'solution'" in message, message
    assert "['prompt']" in message, message  # what the dataset has


def test_missing_dataset_column_from_reward_objectives(tmp_path):
    args = _config(tmp_path, reward_objectives={"accuracy": 0.8, "novelty": 0.2})
    with pytest.raises(ValueError, match=r"'accuracy' needs the dataset column 'answer' or 'solution'"):
        _trainer(tmp_path, None, _without_answer(), args=args)


@pytest.mark.parametrize("name", ["tools", "rollout_func"])
def test_ladder_refuses_tools_and_rollout_func(name, tmp_path):
    def lookup(city: str) -> str:
        """Look up a city.

        Args:
            city: The city.
        """
        return city

    value = [lookup] if name == "tools" else (lambda prompts, trainer: {})
    args = _config(tmp_path, temperature_schedule="linear")
    with pytest.raises(ValueError) as info:
        _trainer(tmp_path, digit_reward, args=args, **{name: value})
    assert f"`{name}`" in str(info.value) and "'linear'" in str(info.value)


def test_objective_weights_naming_an_unknown_objective_of_a_weighted_reward(tmp_path):
    reward = WeightedReward({"digits": digit_reward, "length": length_reward})
    args = _config(tmp_path, objective_weights={"digits": 1.0, "lenght": 0.5})
    with pytest.raises(ValueError) as info:
        _trainer(tmp_path, reward, args=args)
    message = str(info.value)
    assert "`objective_weights`" in message and "'lenght'" in message and "['digits', 'length']" in message


def test_objective_weights_final_naming_an_unknown_objective_of_a_weighted_reward(tmp_path):
    reward = WeightedReward({"digits": digit_reward, "length": length_reward})
    args = _config(tmp_path, objective_weights_final={"digit": 1.0})
    with pytest.raises(ValueError) as info:
        _trainer(tmp_path, reward, args=args)
    assert "`objective_weights_final`" in str(info.value) and "digit" in str(info.value)


def test_weights_that_zero_every_objective(tmp_path):
    # The WeightedReward's weights are not all zero, but the outer `reward_weights` multiplies them by 0.
    reward = WeightedReward({"digits": digit_reward, "length": length_reward}, weights={"length": 0.0})
    args = _config(tmp_path, reward_weights=[0.0])
    with pytest.raises(ValueError, match="zero"):
        _trainer(tmp_path, reward, args=args)


@pytest.mark.parametrize("field_name", ["objective_weights", "objective_weights_final"])
def test_objective_weights_without_named_objectives_are_not_ignored(field_name, tmp_path):
    # With plain reward functions (no WeightedReward, no reward_objectives) there are no objectives to weigh: the
    # weights must be refused, not silently dropped.
    args = _config(tmp_path, **{field_name: {"digit_reward": 2.0}})
    with pytest.raises(ValueError, match=f"`{field_name}`"):
        _trainer(tmp_path, [digit_reward, length_reward], args=args)


PRINCIPLES = {"reward_objectives": {"accuracy": 0.7, "principles": 0.3}}


@pytest.mark.parametrize("missing", ["principles", "judge"])
def test_principles_objective_needs_principles_and_judge(missing, tmp_path):
    overrides = {**PRINCIPLES, "principles": ["Is it kind?"], "judge": {"model": "tiny:tiny"}}
    del overrides[missing]
    message = _raises(tmp_path, overrides)
    assert f"`{missing}`" in message and "'principles'" in message


def test_principles_and_judge_are_validated_and_normalised(tmp_path):
    config = _config(
        tmp_path,
        reward_objectives='{"accuracy": 0.7, "principles": 0.3}',
        principles='["Is it kind?", {"question": "Is it true?", "weight": 2, "name": "true"}]',
        judge='{"base_url": "http://127.0.0.1:8000/v1", "model": "judge", "timeout": 30}',
    )
    assert config.principles == [
        {"question": "Is it kind?", "weight": 1.0, "name": "is_it_kind"},
        {"question": "Is it true?", "weight": 2.0, "name": "true"},
    ]
    assert config.judge == {"base_url": "http://127.0.0.1:8000/v1", "model": "judge", "timeout": 30}
    assert "principles" in config.to_json_string() and "judge" in config.to_json_string()


# ------------------------------------------------------------------------------------------- the blocks of settings
# `judge` and `online_reward_model` are validated by dataclasses (JudgeConfig, OnlineRewardModelConfig with its
# LabelerConfig) built in __post_init__; the fields keep plain dicts, so every way TrainingArguments travel works.
BLOCKS = {
    "reward_objectives": {"accuracy": 0.4, "principles": 0.3, "learned_preference": 0.3},
    "principles": ["Is it kind?"],
    "judge": {"model": "tiny:tiny", "batch_size": 4},
    "online_reward_model": {
        "model": "tiny:tiny",
        "label_budget": 8,
        "learning_rate": 1,
        "labeler": {"type": "judge", "principles": ["Is it right?"]},
    },
}
NORMALISED_RM = {
    "model": "tiny:tiny",
    "label_budget": 8,
    "learning_rate": 1.0,
    "labeler": {"type": "judge", "principles": [{"question": "Is it right?", "weight": 1.0, "name": "is_it_right"}]},
}


def _assert_blocks(args: GRPOExtConfig) -> None:
    from trl_grpo_ext.rewards import JudgeConfig, OnlineRewardModelConfig
    from trl_grpo_ext.rewards.judges import LocalJudgeConfig
    from trl_grpo_ext.rewards.labelers import JudgeLabelerConfig

    assert args.judge == BLOCKS["judge"] and args.online_reward_model == NORMALISED_RM
    assert isinstance(args.judge_config, LocalJudgeConfig) and args.judge_config.batch_size == 4
    assert args.judge_config == JudgeConfig.from_dict(BLOCKS["judge"])
    rm = args.online_reward_model_config
    assert isinstance(rm, OnlineRewardModelConfig) and isinstance(rm.labeler, JudgeLabelerConfig)
    assert (rm.label_budget, rm.learning_rate, rm.update_every) == (8, 1.0, 1)
    assert rm == OnlineRewardModelConfig.from_dict(BLOCKS["online_reward_model"], judge=BLOCKS["judge"])
    assert rm.to_dict(only=BLOCKS["online_reward_model"]) == NORMALISED_RM


def test_blocks_are_validated_into_sub_configs_and_kept_as_plain_dicts(tmp_path):
    import json

    args = _config(tmp_path, **BLOCKS)
    _assert_blocks(args)
    assert args.online_reward_model_config is args.online_reward_model_config  # built once, not per access
    plain = args.to_dict()
    assert plain["judge"] == BLOCKS["judge"] and plain["online_reward_model"] == NORMALISED_RM
    assert "_sub_configs" not in plain and "judge_config" not in plain
    logged = json.loads(args.to_json_string())  # what the Trainer logs and saves
    assert logged["online_reward_model"] == NORMALISED_RM and logged["principles"][0]["name"] == "is_it_kind"
    assert _config(tmp_path).judge_config is None and _config(tmp_path).online_reward_model_config is None


def test_blocks_survive_pickle_deepcopy_and_torch_save(tmp_path):
    import copy
    import pickle

    import torch

    args = _config(tmp_path, **BLOCKS)
    state = args.__getstate__()
    assert "_sub_configs" not in state  # the plain fields travel; the sub-configs are rebuilt from them
    for other in (pickle.loads(pickle.dumps(args)), copy.deepcopy(args), copy.copy(args)):
        assert other.to_dict() == args.to_dict()
        _assert_blocks(other)
    torch.save(args, tmp_path / "training_args.bin")  # as transformers' Trainer saves them
    _assert_blocks(torch.load(tmp_path / "training_args.bin", weights_only=False))


def test_blocks_from_trl_and_from_a_changed_field(tmp_path):
    trl_args = GRPOConfig(**tiny_kwargs(tmp_path))
    args = GRPOExtConfig.from_trl(trl_args, **BLOCKS)
    _assert_blocks(args)
    args.judge = {"base_url": "http://127.0.0.1:8000/v1", "model": "judge"}  # changed after construction
    assert type(args.judge_config).__name__ == "OpenAIJudgeConfig" and args.judge_config.timeout == 60.0
    args.online_reward_model = None
    assert args.online_reward_model_config is None


def test_blocks_from_trl_parser_yaml_and_command_line(tmp_path):
    import json

    import yaml
    from trl import TrlParser

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**tiny_kwargs(tmp_path), **BLOCKS}))
    (from_yaml,) = TrlParser([GRPOExtConfig]).parse_args_and_config(["--config", str(recipe)])
    _assert_blocks(from_yaml)
    argv = [f"--{key}={value}" for key, value in tiny_kwargs(tmp_path).items()]
    argv += [f"--{key}={json.dumps(value)}" for key, value in BLOCKS.items()]  # dict fields as JSON strings
    (from_cli,) = TrlParser([GRPOExtConfig]).parse_args_and_config(argv)
    _assert_blocks(from_cli)
    assert from_cli.to_dict() == from_yaml.to_dict()


def test_the_validation_primitives_examples():
    import doctest
    import re

    import trl_grpo_ext.checks

    class Fenced(doctest.DocTestParser):
        def parse(self, string, name="<string>"):
            return super().parse(re.sub(r"^[ \t]*```.*$", "", string, flags=re.MULTILINE), name)

    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder(parser=Fenced()).find(trl_grpo_ext.checks, "trl_grpo_ext.checks"):
        runner.run(test)
    assert runner.failures == 0 and runner.summarize(verbose=False).attempted >= 10
