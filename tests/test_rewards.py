"""Objectives, WeightedReward, the registry and the reward error policy; no trainer needed."""

import asyncio
import functools
import math
import pickle

import pytest

from trl_grpo_ext.rewards import (
    ObjectiveError,
    WeightedReward,
    accuracy,
    check_required_columns,
    format_objective,
    get_objective,
    group_objective,
    guard_objective,
    is_group_objective,
    length_objective,
    list_objectives,
    novelty,
    readability,
    register_objective,
    weighted_reward_from_spec,
)
from trl_grpo_ext.rewards import registry as registry_module

SEED_ANSWERS = ["The speed is 60 mph.", "60 mph.", "The car goes 50 mph."]  # seed 004, "120 miles in 2 hours"


def constant(value, name=None):
    def objective(prompts, completions, **kwargs):
        return [value] * len(completions)

    objective.__name__ = name or f"constant_{value}"
    return objective


def conversational(text):
    return [{"role": "assistant", "content": text}]


class MetricLog(list):
    def __call__(self, name, value):
        self.append((name, value))


# ---------------------------------------------------------------------------------------------------- worked example
def test_seed_worked_example_is_095_not_093():
    reward = WeightedReward(
        {"accuracy": constant(1.0), "readability": constant(0.9), "novelty": constant(0.7)},
        weights={"accuracy": 0.7, "readability": 0.2, "novelty": 0.1},
    )
    (total,) = reward(prompts=["120 miles in 2 hours?"], completions=["The speed is 60 mph."])
    assert total == pytest.approx(0.95, abs=1e-9)


# ---------------------------------------------------------------------------------------------------------- accuracy
def test_accuracy_seed_answers():
    assert accuracy(None, SEED_ANSWERS, answer=["60"] * 3) == [1.0, 1.0, 0.0]
    completions = [conversational(text) for text in SEED_ANSWERS]
    assert accuracy(None, completions, solution=["60"] * 3) == [1.0, 1.0, 0.0]


def test_accuracy_uses_last_assistant_message():
    completion = [{"role": "assistant", "content": "It is 50."}, {"role": "assistant", "content": "No: 60 mph."}]
    assert accuracy(None, [completion], answer=["60"]) == [1.0]


def test_accuracy_gsm8k_numbers():
    reference = "She sells 1234 eggs a week.\n#### 1,234"
    completions = ["So she sells 1,234 eggs.", "1234", "She sells 1,243 eggs.", "No idea.", "#### 1234"]
    assert accuracy(None, completions, answer=[reference] * 5) == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert accuracy(None, ["It drops to -5 degrees.", "Costs $3.50 in total."], answer=["#### -5", "3.5"]) == [
        1.0,
        1.0,
    ]
    # A hyphen is not a minus sign; separators group by three.
    assert accuracy(None, ["It takes 5-10 minutes.", "Total: 1,234,567.5"], answer=["10", "1234567.5"]) == [1.0, 1.0]
    # The last number counts, not the first.
    assert accuracy(None, ["120 miles in 2 hours is 60 mph"], answer=["60"]) == [1.0]
    assert accuracy(None, ["60 mph? No, 120 / 2 is 61."], answer=["60"]) == [0.0]


def test_accuracy_boxed_and_latex():
    # A numeric reference prefers the last \boxed{} over later numbers; LaTeX goes through math-verify.
    assert accuracy(None, [r"\boxed{60} after 2 hours"], answer=["60"]) == [1.0]
    assert accuracy(None, [r"The answer is \boxed{\frac{120}{2}}."], answer=["60"]) == [1.0]
    completions = [r"My answer is \boxed{\frac{1}{3}}", r"My answer is \boxed{\frac{1}{2}}"]
    assert accuracy(None, completions, solution=[r"$\frac{1}{3}$"] * 2) == [1.0, 0.0]
    assert accuracy(None, [r"\boxed{\frac{1}{3}}"], answer=[r"\frac{1}{3}"]) == [1.0]


def test_accuracy_unparseable_reference_is_none():
    assert accuracy(None, ["60"], answer=["a red car"]) == [None]


def test_accuracy_prefers_answer_over_solution_and_needs_one():
    assert accuracy(None, ["60"], answer=["60"], solution=["50"]) == [1.0]
    with pytest.raises(ValueError, match="`answer` or `solution`"):
        accuracy(None, ["60"], question=["?"])
    assert accuracy.required_columns == [("answer", "solution")]


# ------------------------------------------------------------------------------------------------------- readability
def test_readability_orders_simple_above_complex():
    simple = "The cat sat on the mat. It was warm."
    medium = "To compute the average speed, divide the total distance by the elapsed time."
    complex_ = "Average velocity is determined by dividing displacement by elapsed duration."
    scores = readability(None, [simple, medium, complex_])
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] > scores[1] > scores[2]
    assert scores[0] == 1.0  # clipped at FRE 100


def test_readability_empty_and_conversational():
    assert readability(None, ["", "   ", "..."]) == [0.0, 0.0, 0.0]
    text = "To compute the average speed, divide the total distance by the elapsed time."
    assert readability(None, [conversational(text)]) == readability(None, [text])


# ----------------------------------------------------------------------------------------------------------- novelty
def test_novelty_identical_disjoint_and_shared_ngram():
    identical = ["the cat sat on the mat"] * 3
    assert novelty(None, identical, num_generations=3) == [0.0, 0.0, 0.0]
    disjoint = ["the cat sat on the mat", "dogs bark at night", "rain falls in spring"]
    assert novelty(None, disjoint, num_generations=3) == [1.0, 1.0, 1.0]
    # Trigrams {a b c, b c d} and {a b c, b c x, c x y}: one shared of four -> Jaccard 1/4.
    assert novelty(None, ["a b c d", "A b, c x y."], num_generations=2) == [0.75, 0.75]


def test_novelty_uses_max_similarity_within_group_only():
    completions = ["a b c d", "a b c d", "p q r s", "a b c d"]
    # Groups of 2: (0, 1) identical; (2, 3) disjoint, although 3 repeats 0 in another group.
    assert novelty(None, completions, num_generations=2) == [0.0, 0.0, 1.0, 1.0]
    # One group of 4: 2 is disjoint from all; the others each have an identical twin.
    assert novelty(None, completions, num_generations=4) == [0.0, 0.0, 1.0, 0.0]


def test_novelty_ngram_size_and_short_texts():
    pair = ["the cat sat", "the dog sat"]
    assert novelty(None, pair, num_generations=2) == [1.0, 1.0]  # no shared trigram
    assert novelty(None, pair, num_generations=2, novelty_ngram=1) == [0.5, 0.5]  # {the, sat} of 4 unigrams
    # Texts shorter than n fall back to shorter n-grams: "yes" vs "yes indeed" compare unigrams.
    assert novelty(None, ["Yes.", "Yes, indeed!"], num_generations=2) == [0.5, 0.5]


def test_novelty_group_of_one_empty_and_conversational():
    assert novelty(None, ["anything at all", "more"], num_generations=1) == [1.0, 1.0]
    assert novelty(None, ["", "something"], num_generations=2) == [0.0, 1.0]
    completions = [conversational("a b c d"), conversational("a b c d")]
    assert novelty(None, completions, num_generations=2) == [0.0, 0.0]


def test_novelty_needs_num_generations_dividing_the_batch():
    assert novelty.needs_group is True and is_group_objective(novelty)
    assert is_group_objective(functools.partial(novelty, num_generations=2))
    with pytest.raises(ValueError, match="needs `num_generations`"):
        novelty(None, ["a", "b"])
    with pytest.raises(ValueError, match="not a whole number of groups"):
        novelty(None, ["a", "b", "c"], num_generations=2)


def test_group_objective_decorator():
    @group_objective
    def spread(prompts, completions, num_generations, **kwargs):
        return [float(num_generations)] * len(completions)

    assert spread.needs_group is True
    assert not is_group_objective(readability)


# ------------------------------------------------------------------------------------------------- format and length
def test_format_objective():
    fmt = get_objective("format")
    completions = ["<think>120 / 2 = 60</think>\n<answer>60</answer>", "<answer>60</answer>", "60"]
    assert fmt(None, completions) == [1.0, 0.0, 0.0]
    assert fmt.__name__ == "format"
    digits = format_objective(r"^<answer>\d+</answer>$", name="digits")
    assert digits(None, ["<answer>60</answer>", conversational("<answer>x</answer>")]) == [1.0, 0.0]
    assert pickle.loads(pickle.dumps(digits))(None, ["<answer>7</answer>"]) == [1.0]


def test_length_objective():
    length = length_objective(max_completion_len=100, soft_punish_cache=20)
    assert length(None, ["a", "b", "c"], completion_ids=[[1] * 80, [1] * 90, [1] * 120]) == [0.0, -0.5, -1.0]
    assert get_objective("length")(None, ["a"], completion_ids=[[1] * 10]) == [0.0]
    with pytest.raises(ValueError, match="completion_ids"):
        length(None, ["a"])
    with pytest.raises(ValueError, match="soft_punish_cache"):
        length_objective(max_completion_len=10, soft_punish_cache=20)


# ---------------------------------------------------------------------------------------------------------- registry
@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry_module, "_OBJECTIVES", dict(registry_module._OBJECTIVES))


def test_registry_builtins_register_and_import_path(clean_registry):
    assert {"accuracy", "readability", "novelty", "format", "length"} <= set(list_objectives())
    assert get_objective("accuracy") is accuracy
    shout = constant(1.0, "shout")
    assert register_objective("shout", shout) is shout
    assert get_objective("shout") is shout
    with pytest.raises(ValueError, match="already registered"):
        register_objective("shout", constant(0.0))
    other = constant(0.0)
    register_objective("shout", other, overwrite=True)
    assert get_objective("shout") is other
    assert get_objective("trl_grpo_ext.rewards.objectives:readability") is readability
    assert get_objective("trl.rewards:think_format_reward").__name__ == "think_format_reward"


def test_registry_unknown_names(clean_registry):
    with pytest.raises(ValueError) as info:
        get_objective("foo")
    assert str(info.value) == (
        f"Unknown objective 'foo'; registered objectives: {list_objectives()}, "
        "or use an import path 'package.module:function'."
    )
    with pytest.raises(ValueError, match="Cannot import module"):
        get_objective("no_such_module_xyz:fn")
    with pytest.raises(ValueError, match="has no attribute"):
        get_objective("trl_grpo_ext.rewards.objectives:nope")


def test_weighted_reward_from_spec():
    reward = weighted_reward_from_spec({"accuracy": 0.7, "readability": 0.2, "novelty": 0.1}, novelty_ngram=1)
    assert reward.weights == {"accuracy": 0.7, "readability": 0.2, "novelty": 0.1}
    assert reward.needs_group and reward.required_columns == [("answer", "solution")]
    # novelty_ngram is bound to the novelty objective: unigrams here.
    bound = reward.objectives["novelty"]
    assert bound.needs_group and bound.__name__ == "novelty"
    assert bound(None, ["the cat sat", "the dog sat"], num_generations=2) == [0.5, 0.5]
    with pytest.raises(ValueError, match="Unknown objective 'bogus'"):
        weighted_reward_from_spec({"bogus": 1.0})


def test_objectives_a_config_builds_are_built_by_one_rule():
    # `principles` and `learned_preference` are ConfiguredObjectives: placeholders that raise until built from config
    # fields; weighted_reward_from_spec builds those it has the fields of, the trainer the others.
    from trl_grpo_ext.rewards import ConfiguredObjective, PrinciplesObjective

    placeholders = {name: get_objective(name) for name in ("principles", "learned_preference")}
    assert all(isinstance(p, ConfiguredObjective) for p in placeholders.values())
    assert f"{placeholders['principles'].__module__}:{placeholders['principles'].__qualname__}" == (
        "trl_grpo_ext.rewards.principles:principles"
    )
    with pytest.raises(ValueError, match="set `principles` and `judge` in the config"):
        placeholders["principles"](prompts=["p"], completions=["c"])
    with pytest.raises(ValueError, match="set `online_reward_model` in the config"):
        placeholders["learned_preference"](prompts=["p"], completions=["c"])
    reward = weighted_reward_from_spec(
        {"accuracy": 0.4, "principles": 0.3, "learned_preference": 0.3},
        principles=["Is it kind?"],
        judge={"model": "tiny:tiny"},
    )
    assert isinstance(reward.objectives["principles"], PrinciplesObjective)
    assert reward.objectives["principles"].name == "principles"
    assert reward.objectives["learned_preference"] is placeholders["learned_preference"]  # built by the trainer
    with pytest.raises(
        ValueError, match=r"names 'principles', which needs the `principles` field; got principles=None"
    ):
        weighted_reward_from_spec({"principles": 1.0}, judge={"model": "tiny:tiny"})


def test_rewards_modules_form_no_circle_and_share_no_private_name():
    # Every import inside rewards/ (function-level ones included) goes one way, and no module imports another's
    # underscore name.
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "trl_grpo_ext" / "rewards"
    modules = {
        ".".join(p.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in package.rglob("*.py")
    }
    graph = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = here.split(".")[: len(here.split(".")) - node.level + 1] + ([node.module] if node.module else [])
            target = ".".join(base)
            private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
            assert not private, f"{name} imports {private} from {target}"
            deps |= {t for t in [target, *(f"{target}.{a.name}" for a in node.names)] if t in modules}
        graph[name] = deps - {name}
    package_name = "rewards"

    def reaches(start, goal, seen):
        for dep in graph[start]:
            if dep == goal or (dep not in seen and not seen.add(dep) and reaches(dep, goal, seen)):
                return True
        return False

    for name in graph:
        if name != package_name:  # the package's __init__ re-exports; a module importing it would be the circle
            assert not reaches(name, name, set()), f"{name} is on an import circle"


# ---------------------------------------------------------------------------------------------------- WeightedReward
def test_weighted_reward_validation():
    objectives = {"a": constant(1.0), "b": constant(0.0)}
    reward = WeightedReward(objectives)
    assert reward.weights == {"a": 1.0, "b": 1.0} and reward.objectives == objectives
    assert reward.__name__ == "weighted_reward"
    with pytest.raises(ValueError, match=r"unknown objectives \['c'\]; valid names: \['a', 'b'\]"):
        WeightedReward(objectives, weights={"c": 1.0})
    for bad in (math.nan, math.inf, "1"):
        with pytest.raises(ValueError, match=r"finite number.*valid names: \['a', 'b'\]"):
            WeightedReward(objectives, weights={"a": bad})
    with pytest.raises(ValueError, match=r"all zero.*valid names: \['a', 'b'\]"):
        WeightedReward(objectives, weights={"a": 0.0, "b": 0})
    with pytest.raises(ValueError, match="non-empty mapping"):
        WeightedReward({})
    with pytest.raises(TypeError, match="reward function or a reward-model id"):
        WeightedReward({"a": 3})


def test_weighted_reward_plain_trl_mode_logs_objective_means():
    log = MetricLog()
    reward = WeightedReward({"accuracy": accuracy, "readability": readability}, weights={"readability": 0.5})
    prompts = ["120 miles in 2 hours?"] * 3
    totals = reward(prompts=prompts, completions=SEED_ANSWERS, answer=["60"] * 3, log_metric=log)
    read = readability(None, SEED_ANSWERS)
    assert totals == pytest.approx([1.0 + 0.5 * read[0], 1.0 + 0.5 * read[1], 0.5 * read[2]])
    assert log == [("objectives/accuracy/mean", pytest.approx(2 / 3)), ("objectives/readability/mean", sum(read) / 3)]


def test_weighted_reward_none_semantics():
    def sometimes(prompts, completions, **kwargs):
        return [1.0, None, None]

    def other(prompts, completions, **kwargs):
        return [2.0, 3.0, None]

    log = MetricLog()
    reward = WeightedReward({"sometimes": sometimes, "other": other}, weights={"other": 0.5})
    assert reward(prompts=[""] * 3, completions=["a", "b", "c"], log_metric=log) == [2.0, 1.5, None]
    assert log == [("objectives/sometimes/mean", 1.0), ("objectives/other/mean", 2.5)]


def test_weighted_reward_plain_mode_rejects_reward_models_and_bad_objectives():
    reward = WeightedReward({"accuracy": accuracy, "helpful": "org/reward-model"})
    with pytest.raises(TypeError, match=r"\['helpful'\] are reward models.*GRPOExtTrainer"):
        reward(prompts=["p"], completions=["60"], answer=["60"])

    def short(prompts, completions, **kwargs):
        return [1.0]

    with pytest.raises(ObjectiveError, match="'short' returned 1 rewards for 2 completions"):
        WeightedReward({"short": short})(prompts=["p", "q"], completions=["a", "b"])


def test_weighted_reward_expand():
    reward = weighted_reward_from_spec({"accuracy": 0.7, "readability": 0.2, "novelty": 0.1})
    reward.objectives["helpful"] = "org/reward-model"
    reward.weights["helpful"] = 0.5
    funcs, weights, names = reward.expand()
    assert names == ["accuracy", "readability", "novelty", "helpful"]
    assert weights == [0.7, 0.2, 0.1, 0.5]
    assert [getattr(f, "__name__", f) for f in funcs] == ["accuracy", "readability", "novelty", "org/reward-model"]
    assert funcs[0].required_columns == [("answer", "solution")]
    assert funcs[2].needs_group and not getattr(funcs[0], "needs_group", False)
    assert funcs[0](prompts=None, completions=SEED_ANSWERS, answer=["60"] * 3) == [1.0, 1.0, 0.0]
    restored = pickle.loads(pickle.dumps(funcs[2]))
    assert restored.__name__ == "novelty" and restored(None, ["a b c", "a b c"], num_generations=2) == [0.0, 0.0]


def test_expanded_weighted_sum_matches_plain_mode():
    reward = WeightedReward({"one": constant(1.0), "half": constant(0.5)}, weights={"one": 0.3, "half": -2.0})
    funcs, weights, _ = reward.expand()
    per_func = [f(prompts=["p"], completions=["c"]) for f in funcs]
    expanded_total = sum(w * r[0] for w, r in zip(weights, per_func))
    assert reward(prompts=["p"], completions=["c"]) == [pytest.approx(expanded_total)]


# ------------------------------------------------------------------------------------------------------------- guard
def fails_on_b(prompts, completions, **kwargs):
    return [1.0 / (c != "b") for c in completions]


def test_guard_raise_names_objective_and_completion():
    guarded = guard_objective("picky", fails_on_b, "raise")
    assert guarded(None, ["a", "c"]) == [1.0, 1.0]
    with pytest.raises(ObjectiveError, match=r"'picky' raised ZeroDivisionError at completion index 1") as info:
        guarded(None, ["a", "b", "c"])
    assert isinstance(info.value.__cause__, ZeroDivisionError)

    def nan_at_2(prompts, completions, **kwargs):
        return [0.0, 1.0, math.nan]

    with pytest.raises(ObjectiveError, match=r"'nan_at_2' returned nan for completion index 2"):
        guard_objective("nan_at_2", nan_at_2)(None, ["a", "b", "c"])
    with pytest.raises(ObjectiveError, match=r"'inf' returned inf for completion index 0"):
        guard_objective("inf", constant(math.inf))(None, ["a"])
    with pytest.raises(ObjectiveError, match=r"'long' returned 3 rewards for 2 completions"):
        guard_objective("long", lambda prompts, completions, **kw: [1.0] * 3)(None, ["a", "b"])


def test_guard_skip_gives_none_and_counts_errors():
    log = MetricLog()

    def nan_at_1(prompts, completions, **kwargs):
        return [0.5, math.nan, None]

    assert guard_objective("nan_at_1", nan_at_1, "skip")(None, ["a", "b", "c"], log_metric=log) == [0.5, None, None]
    assert guard_objective("picky", fails_on_b, "skip")(None, ["a", "b", "c"], log_metric=log) == [None] * 3
    assert guard_objective("picky", fails_on_b, "skip")(None, ["a", "c"], log_metric=log) == [1.0, 1.0]
    short = guard_objective("short", lambda prompts, completions, **kw: [1.0], "skip")
    assert short(None, ["a", "b"], log_metric=log) == [None, None]
    assert log == [
        ("rewards/nan_at_1/errors", 1.0),
        ("rewards/picky/errors", 3.0),
        ("rewards/picky/errors", 0.0),
        ("rewards/short/errors", 2.0),
    ]
    assert guard_objective("quiet", fails_on_b, "skip")(None, ["b"]) == [None]  # no log_metric: still None


def test_guard_keeps_name_attributes_and_async():
    guarded = guard_objective("nov", novelty, "skip")
    assert guarded.__name__ == "nov" and guarded.needs_group
    assert guarded(None, ["a b c", "a b c"], num_generations=2) == [0.0, 0.0]
    assert guard_objective("acc", accuracy).required_columns == [("answer", "solution")]
    assert pickle.loads(pickle.dumps(guard_objective("acc", accuracy, "skip"))).__name__ == "acc"
    with pytest.raises(ValueError, match=r"one of \['raise', 'skip'\], got 'ignore'"):
        guard_objective("acc", accuracy, "ignore")

    async def judge(prompts, completions, **kwargs):
        return [math.nan for _ in completions]

    guarded_judge = guard_objective("judge", judge, "skip")
    assert asyncio.iscoroutinefunction(type(guarded_judge).__call__)
    assert asyncio.run(guarded_judge(None, ["a"])) == [None]


# --------------------------------------------------------------------------------------------------- required columns
def test_check_required_columns():
    check_required_columns({"accuracy": accuracy, "rm": "org/reward-model"}, ["prompt", "solution"])
    with pytest.raises(ValueError) as info:
        check_required_columns({"accuracy": accuracy, "readability": readability}, ["prompt", "question"])
    assert str(info.value) == (
        "Objective 'accuracy' needs the dataset column 'answer' or 'solution'; the dataset has ['prompt', 'question']."
    )
    reward = WeightedReward({"correct": accuracy})
    with pytest.raises(ValueError, match="'weighted_reward' needs the dataset column 'answer' or 'solution'"):
        check_required_columns({"weighted_reward": reward}, ["prompt"])
    funcs, _, names = reward.expand()
    with pytest.raises(ValueError, match="'correct' needs"):
        check_required_columns(dict(zip(names, funcs)), ["prompt"])
