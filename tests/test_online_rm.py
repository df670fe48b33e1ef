"""The online reward model (`rewards/online.py`) and its labelers (`rewards/labelers.py`).

Pure parts first (pairs, selectors, the loss, labels, validation), then the objective on the tiny kit's reward model
without a trainer, then real tiny GRPO runs: learning with a gold labeler, the label budget, and resume.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

from tests.helpers import build_trainer, prompt_dataset
from trl_grpo_ext.kit import resolve_model_path
from trl_grpo_ext.rewards import (
    GoldLabeler,
    ObjectiveError,
    OnlineRewardModel,
    QueueLabeler,
    WeightedReward,
    accuracy,
    bradley_terry_loss,
)
from trl_grpo_ext.rewards.online import check_label, group_pairs, select_random, select_uncertain


def digit_fraction(prompts, completions, **kwargs):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def graded_accuracy(prompts, completions, answer, **kwargs):
    """The tiny arithmetic task's accuracy, plus half a point for the fraction of digits: a random policy's
    completions are almost never right, and a gold that only ever says "tie" teaches nothing."""
    exact = accuracy(prompts, completions, answer=answer)
    return [(a or 0.0) + 0.5 * d for a, d in zip(exact, digit_fraction(prompts, completions))]


def reward_model(**kwargs) -> OnlineRewardModel:
    return OnlineRewardModel("tiny:tiny", **kwargs)


BATCH = dict(
    prompts=["1+2="] * 4 + ["3+4="] * 4,
    completions=["3", "12 apples", "abc", "3!", "7", "x7y", "seven", "77"],
    answer=["3"] * 4 + ["7"] * 4,
)


# ---------------------------------------------------------------------------------------------------- pure parts
def test_group_pairs_stay_within_groups_and_drop_identical_texts():
    assert group_pairs(6, 3) == [(0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5)]
    assert group_pairs(4, 1) == []
    assert group_pairs(4, 4, texts=["a", "b", "a", "c"]) == [(0, 1), (0, 3), (1, 2), (1, 3), (2, 3)]
    with pytest.raises(ValueError, match="5 completions are not a whole number of groups of num_generations=2"):
        group_pairs(5, 2)
    with pytest.raises(ValueError, match=r"`num_generations` must be an integer >= 1, got 0"):
        group_pairs(4, 0)


def test_selectors():
    pairs = group_pairs(8, 4)
    scores = [0.0, 1.0, 0.05, 3.0, 2.0, 2.0, -1.0, 0.9]
    first = select_random(pairs, 4, scores, random.Random(3))
    assert first == select_random(pairs, 4, scores, random.Random(3))  # seeded
    assert len(set(first)) == 4 and set(first) <= set(pairs)
    assert select_random(pairs, 20, scores, random.Random(3)) == pairs  # fewer candidates than asked: all
    # |r_i - r_j|: (4, 5) 0.0, (0, 2) 0.05, (1, 2) 0.95, (0, 1) 1.0, ...
    assert select_uncertain(pairs, 2, scores, random.Random(0)) == [(0, 2), (4, 5)]
    assert select_uncertain(pairs, 3, scores, random.Random(0)) == [(0, 2), (1, 2), (4, 5)]


def test_bradley_terry_loss_golden_numbers():
    one = torch.tensor([1.0])
    # -log sigmoid(2 - 1) = log(1 + e^-1)
    assert bradley_terry_loss(torch.tensor([2.0]), one, one).item() == pytest.approx(math.log1p(math.exp(-1)))
    assert bradley_terry_loss(torch.tensor([2.0]), one, one).item() == pytest.approx(0.31326168751822286)
    # margin 0.5: -log sigmoid(0.5) = 0.474077
    assert bradley_terry_loss(torch.tensor([2.0]), one, one, 0.5).item() == pytest.approx(0.47407698418010663)
    # label 0 swaps the sides; a tie is the mean of both directions; the mean over pairs
    assert bradley_terry_loss(one, torch.tensor([2.0]), torch.tensor([0.0])).item() == pytest.approx(0.31326169)
    tie = 0.5 * (math.log1p(math.exp(-1)) + math.log1p(math.exp(1)))
    assert bradley_terry_loss(torch.tensor([2.0]), one, torch.tensor([0.5])).item() == pytest.approx(tie)
    both = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert both.item() == pytest.approx((0.31326168751822286 + math.log(2)) / 2)
    # TRL RewardTrainer's loss, exactly, on decided pairs
    chosen, rejected = torch.randn(5, generator=torch.Generator().manual_seed(0)), torch.zeros(5)
    trl_loss = -torch.nn.functional.logsigmoid(chosen - rejected - 0.3).mean()
    assert bradley_terry_loss(chosen, rejected, torch.ones(5), 0.3).item() == pytest.approx(trl_loss.item())


def test_check_label():
    assert [check_label(v) for v in (1, 0, 0.5, 1.0, None)] == [1.0, 0.0, 0.5, 1.0, None]
    for bad in (2, -1, 0.3, "a", True, math.nan, [1]):
        with pytest.raises(ValueError, match="invalid label"):
            check_label(bad)
    with pytest.raises(ValueError, match="the labeler failed on this pair: RuntimeError: down"):
        check_label(RuntimeError("down"))


def test_gold_labeler_compares_pairwise():
    labeler = GoldLabeler(accuracy)
    assert labeler(["2+2="] * 3, ["4", "5", "4"], ["5", "4", "4."], answer=["4"] * 3) == [1.0, 0.0, 0.5]
    assert labeler(["x"], ["4"], ["5"], answer=[r"\frac{"]) == [None]  # unparsable reference: abstain
    nan = GoldLabeler(lambda prompts, completions, **kw: [math.nan] * len(completions))(["x"], ["a"], ["b"])
    assert isinstance(nan[0], ValueError)  # a fault, never a label


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(update_every=-1), r"`update_every` must be an integer >= 0, got -1"),
        (dict(label_budget=-5), r"`label_budget` must be an integer >= 0 or None, got -5"),
        (dict(pairs_per_update=0), r"`pairs_per_update` must be an integer >= 1, got 0"),
        (dict(selector="best"), r"`selector` must be one of \['random', 'uncertain'\] or a callable, got 'best'"),
        (dict(buffer_size=0), r"`buffer_size` must be an integer >= 1, got 0"),
        (dict(learning_rate=0.0), r"`learning_rate` must be a finite number > 0, got 0.0"),
        (dict(learning_rate="fast"), r"`learning_rate` must be a finite number > 0, got 'fast'"),
        (dict(heldout_fraction=1.0), r"`heldout_fraction` must be in \[0, 1\), got 1.0"),
        (dict(error_policy="ignore"), r"`error_policy` must be one of \['raise', 'skip'\] or None, got 'ignore'"),
        (dict(seed_pairs=[{"prompt": "a", "chosen": "b"}]), r"`seed_pairs\[0\]` must be a dict with the keys"),
    ],
)
def test_construction_refuses(kwargs, message):
    with pytest.raises(ValueError, match=message):
        reward_model(**kwargs)


# ---------------------------------------------------------------------------------------------------- the objective
def _direct_scores(texts):
    path = Path(resolve_model_path("tiny:tiny")) / "reward"
    model, tokenizer = AutoModelForSequenceClassification.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        return [
            model(**tokenizer(t, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item() for t in texts
        ]


def test_frozen_model_is_exactly_the_reward_model():
    rm = reward_model(batch_size=3)  # no labeler: frozen; batches of 3 so padding is exercised
    scores = rm(**BATCH, num_generations=4)
    expected = _direct_scores([p + c for p, c in zip(BATCH["prompts"], BATCH["completions"])])
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(scores)) > 1 and rm.frozen and rm.updates == 0

    # Conversational: the tokenizer's chat template over prompt + the completion's last assistant message.
    prompts = [[{"role": "user", "content": "1+2="}]] * 2
    completions = [[{"role": "assistant", "content": "3"}], [{"role": "assistant", "content": "4"}]]
    texts = [rm.tokenizer.apply_chat_template([*prompts[0], c[0]], tokenize=False) for c in completions]
    assert texts[0].endswith("<|im_start|>assistant\n3<|im_end|>\n")
    assert rm(prompts, completions, num_generations=2) == pytest.approx(_direct_scores(texts), abs=1e-5)

    # update_every=0 with a labeler: frozen too, and the weights do not move.
    still = reward_model(labeler=GoldLabeler(digit_fraction), update_every=0)
    before = {k: v.clone() for k, v in still.model.state_dict().items()}
    assert still(**BATCH, num_generations=4) == pytest.approx(scores, abs=1e-6)
    assert all(torch.equal(before[k], v) for k, v in still.model.state_dict().items())


def test_updates_spend_the_budget_then_freeze(caplog):
    rm = reward_model(
        labeler=GoldLabeler(digit_fraction),
        pairs_per_update=4,
        label_budget=10,
        learning_rate=1e-3,
        heldout_fraction=0.25,
    )
    logged = []
    log = lambda key, value: logged.append((key, value))  # noqa: E731
    with caplog.at_level(logging.WARNING, logger="trl_grpo_ext.rewards.online"):
        for _ in range(4):
            rm(**BATCH, num_generations=4, log_metric=log)
    assert (rm.labels_used, rm.budget_left, rm.updates, rm.frozen) == (10, 0, 3, True)
    assert [v for k, v in logged if k == "rm/labels_used"] == [4.0, 8.0, 10.0, 10.0]
    assert [v for k, v in logged if k == "rm/budget_left"] == [6.0, 2.0, 0.0, 0.0]
    assert len([k for k, _ in logged if k == "rm/loss"]) == 3  # no update once frozen
    assert {k for k, _ in logged} >= {"rm/loss", "rm/pair_accuracy", "rm/gold_agreement"}
    assert len(rm.heldout) == 1 + 1 + 0 and len(rm.buffer) == 10 - 2  # round(0.25 * 4) = 1, round(0.25 * 2) = 0
    frozen_messages = [r for r in caplog.records if "label budget of 10 labels is spent" in r.getMessage()]
    assert len(frozen_messages) == 1
    weights = {k: v.clone() for k, v in rm.model.state_dict().items()}
    rm(**BATCH, num_generations=4)
    assert all(torch.equal(weights[k], v) for k, v in rm.model.state_dict().items())


def test_uncertain_selector_and_group_size_for_plain_trl():
    rm = reward_model(labeler=GoldLabeler(digit_fraction), pairs_per_update=2, selector="uncertain", num_generations=4)
    calls = []
    rm.labeler = lambda prompts, a, b, **columns: calls.append((a, b, columns)) or [1.0] * len(a)
    scores = rm.score(BATCH["prompts"], BATCH["completions"])
    rm(**BATCH)  # no num_generations kwarg: the constructor's
    pairs = group_pairs(8, 4)
    expected = select_uncertain(pairs, 2, scores, random.Random(0))
    assert calls[0][0] == [BATCH["completions"][i] for i, _ in expected]
    assert calls[0][2] == {"answer": [BATCH["answer"][i] for i, _ in expected]}  # the pair's dataset columns
    with pytest.raises(ValueError, match="needs `num_generations`"):
        reward_model(labeler=GoldLabeler(digit_fraction))(**BATCH)


def test_seed_pairs_are_learnt_before_the_first_batch():
    seed = [{"prompt": "1+2=", "chosen": "3", "rejected": "abc"}, {"prompt": "3+4=", "chosen": "7", "rejected": "x"}]
    pairs = [{"prompt": p["prompt"], "a": p["chosen"], "b": p["rejected"], "label": 1.0} for p in seed]
    rm = reward_model(labeler=GoldLabeler(digit_fraction), seed_pairs=seed, seed_epochs=20, learning_rate=1e-3)
    before = rm.pair_loss(pairs)
    rm(**BATCH, num_generations=4)
    assert rm.pair_loss(pairs) < before * 0.5 and rm.pair_accuracy(pairs) == 1.0
    assert rm.labels_used == 8  # the seed pairs are free


def test_train_pairs_learns_offline_pairs_without_spending_labels():
    pairs = [
        {"prompt": "1+2=", "a": "3", "b": "abc", "label": 1.0},
        {"prompt": "3+4=", "a": "x", "b": "7", "label": 0.0},
        {"prompt": "5+5=", "a": "10", "b": "ten", "label": 0.5},
    ]
    rm = reward_model(learning_rate=1e-3, label_budget=8)
    before = rm.pair_loss(pairs)
    weights = {k: v.clone() for k, v in rm.model.state_dict().items()}
    assert rm.train_pairs(pairs, steps=1) == pytest.approx(before, abs=1e-6)  # the loss before the step
    losses = [rm.train_pairs(pairs, steps=1) for _ in range(15)]
    assert losses[-1] < losses[0] < before and rm.pair_loss(pairs) < 0.5 * before
    assert rm.pair_accuracy(pairs) == 1.0  # both decided pairs ordered; the tie is not counted
    assert any(not torch.equal(v, rm.model.state_dict()[k]) for k, v in weights.items())
    # Offline training is not an online update: no label spent, nothing in the replay buffer.
    assert rm.updates == 0 and rm.labels_used == 0 and rm.budget_left == 8 and rm.buffer == []
    for steps in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=rf"`steps` must be an integer >= 1 .*got {steps!r}"):
            rm.train_pairs(pairs, steps=steps)
    with pytest.raises(ValueError, match="`pairs` is empty"):
        rm.train_pairs([])


def test_labeler_faults_follow_the_error_policy(caplog):
    def broken(prompts, a, b, **columns):
        raise RuntimeError("labeler down")

    with pytest.raises(ObjectiveError, match=r"Objective 'rm': labeler .* raised RuntimeError: labeler down"):
        reward_model(labeler=broken, error_policy="raise")(**BATCH, num_generations=4)
    invalid = lambda prompts, a, b, **columns: [2] + [1.0] * (len(a) - 1)  # noqa: E731
    with pytest.raises(ObjectiveError, match=r"gave pair index 0 .*invalid label 2"):
        reward_model(labeler=invalid, error_policy="raise")(**BATCH, num_generations=4)
    short = lambda prompts, a, b, **columns: [1.0]  # noqa: E731
    with pytest.raises(ObjectiveError, match="returned 1 labels for 8 pairs"):
        reward_model(labeler=short)(**BATCH, num_generations=4)  # no trainer: "raise"

    logged = []
    rm = reward_model(labeler=invalid, error_policy="skip")
    with caplog.at_level(logging.WARNING, logger="trl_grpo_ext.rewards.online"):
        rm(**BATCH, num_generations=4, log_metric=lambda k, v: logged.append((k, v)))
        rm(**BATCH, num_generations=4, log_metric=lambda k, v: logged.append((k, v)))
    assert rm.labels_used == 14  # 7 of 8 per round: the invalid one dropped, not labelled
    assert all(p["label"] == 1.0 for p in rm.buffer + rm.heldout)
    assert [v for k, v in logged if k == "rm/label_errors"] == [1.0, 1.0]
    assert len([r for r in caplog.records if "invalid label 2" in r.getMessage()]) == 1  # warned once
    skipped = reward_model(labeler=broken, error_policy="skip")
    skipped(**BATCH, num_generations=4)
    assert skipped.labels_used == 0 and skipped.updates == 0


def test_queue_labeler_with_a_person_labelling_while_the_run_polls(tmp_path):
    labels_path = tmp_path / "labels.jsonl"
    labeler = QueueLabeler(labels_path, timeout=20, poll_interval=0.05)
    assert labeler.requests_path == tmp_path / "labels.requests.jsonl"
    answered = threading.Event()

    def person():
        # Waits for the requests, answers all but the last: the first digit-richer side wins; a half line first.
        deadline = time.monotonic() + 20
        while not labeler.requests_path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        requests = [json.loads(line) for line in labeler.requests_path.read_text().splitlines()]
        with labels_path.open("a") as f:
            f.write('{"id": "partial')  # an incomplete last line: not read until its newline comes
            f.flush()
            time.sleep(0.2)
            f.write('", "label": 1}\n')
            for request in requests[:-1]:
                score = digit_fraction(None, [request["a"], request["b"]])
                label = 1 if score[0] > score[1] else 0 if score[0] < score[1] else 0.5
                f.write(json.dumps({"id": request["id"], "label": label}) + "\n")
                f.flush()
        answered.set()

    rm = reward_model(labeler=labeler, pairs_per_update=4, label_budget=6, heldout_fraction=0.0, learning_rate=1e-3)
    thread = threading.Thread(target=person)
    thread.start()
    labeler.timeout = 1.0  # the run waits at most a second for the last pair
    rm(**BATCH, num_generations=4)
    thread.join(timeout=30)
    assert answered.is_set()
    requests = [json.loads(line) for line in labeler.requests_path.read_text().splitlines()]
    assert len(requests) == 4 and set(requests[0]) == {"id", "prompt", "a", "b"}
    assert rm.labels_used == 3 and labeler.outstanding == 1  # the unanswered pair stays queued
    # Within the budget: 6 - 3 used - 1 outstanding = 2 new requests; the late answer is collected next round.
    with labels_path.open("a") as f:
        f.write(json.dumps({"id": requests[-1]["id"], "label": 0.5}) + "\n")
    labeler.timeout = 0.0
    rm(**BATCH, num_generations=4)
    assert len(labeler.requests_path.read_text().splitlines()) == 6
    assert rm.labels_used == 4 and labeler.outstanding == 2
    assert any(p["label"] == 0.5 and p["a"] == requests[-1]["a"] for p in rm.buffer)
    # A bad line is a fault under the policy, reported once.
    with labels_path.open("a") as f:
        f.write("not json\n")
    with pytest.raises(ObjectiveError, match=r"labels.jsonl:\d+: "):
        rm(**BATCH, num_generations=4)
    state = labeler.state_dict()
    fresh = QueueLabeler(labels_path)
    fresh.load_state_dict(json.loads(json.dumps(state)))
    assert fresh.outstanding == 2


# ---------------------------------------------------------------------------------------------------- training runs
class StopAfter(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


RUN = dict(max_steps=4, save_strategy="steps", save_steps=2, reward_error_policy="skip")


def _online_rm() -> OnlineRewardModel:
    return reward_model(
        labeler=GoldLabeler(graded_accuracy),
        pairs_per_update=6,
        label_budget=15,  # 6 + 6 + 3: spent at the third batch, frozen for the fourth
        update_steps=3,
        learning_rate=3e-3,
        seed=5,
    )


def _train(output_dir, rm, callbacks=(), resume=None):
    trainer = build_trainer(output_dir, reward_funcs=WeightedReward({"rm": rm}), dataset=prompt_dataset(16), **RUN)
    for callback in callbacks:
        trainer.add_callback(callback)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def _rm_entries(log_history) -> dict[int, dict]:
    return {
        e["step"]: {k: v for k, v in e.items() if k.startswith("rm/")} for e in log_history if "rm/labels_used" in e
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    rm = _online_rm()
    initial = _online_rm()  # the same reward model before any learning
    trainer = _train(tmp_path_factory.mktemp("uninterrupted"), rm)
    return trainer, rm, initial


def test_tiny_run_learns_from_gold_labels_then_freezes(uninterrupted):
    trainer, rm, initial = uninterrupted
    assert rm in trainer.callback_handler.callbacks and rm.error_policy == "skip"  # bound by the trainer
    entries = _rm_entries(trainer.state.log_history)
    assert sorted(entries) == [1, 2, 3, 4]
    assert [entries[s]["rm/labels_used"] for s in (1, 2, 3, 4)] == [6, 12, 15, 15]
    assert [entries[s]["rm/budget_left"] for s in (1, 2, 3, 4)] == [9, 3, 0, 0]
    assert "rm/loss" in entries[3] and "rm/loss" not in entries[4] and rm.updates == 3
    assert all(0.0 <= entries[s]["rm/pair_accuracy"] <= 1.0 for s in (1, 2, 3))
    assert any("rm/gold_agreement" in e for e in entries.values())
    # The rewards TRL trained on are the reward model's scores.
    assert any(key.startswith("rewards/rm/mean") for key in trainer.state.log_history[0])
    # It learnt: the trained model fits the labelled pairs better than the same model before training.
    labelled = rm.buffer + rm.heldout
    assert len(labelled) == 15
    assert rm.pair_loss(labelled) < initial.pair_loss(labelled) - 0.05
    assert rm.pair_accuracy(labelled) >= initial.pair_accuracy(labelled)


def test_resume_gives_the_uninterrupted_reward_model(uninterrupted, tmp_path):
    trainer, rm, _ = uninterrupted
    stopped_rm = _online_rm()
    _train(tmp_path / "run", stopped_rm, callbacks=[StopAfter(2)])
    checkpoint = tmp_path / "run" / "run" / "checkpoint-2"
    files = sorted(p.name for p in (checkpoint / "online_rm" / "rm").iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "state.json"]
    saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]["OnlineRewardModel"]
    assert saved["attributes"]["labels_used"] == 12 and saved["attributes"]["step"] == 2

    resumed_rm = _online_rm()
    resumed = _train(tmp_path / "run", resumed_rm, resume=str(checkpoint))
    assert resumed.state.global_step == 4
    expected, actual = _rm_entries(trainer.state.log_history), _rm_entries(resumed.state.log_history)
    for step in (3, 4):
        assert actual[step].keys() == expected[step].keys()
        assert actual[step] == pytest.approx(expected[step], abs=1e-6)
    assert (resumed_rm.labels_used, resumed_rm.updates) == (rm.labels_used, rm.updates)
    for key, value in rm.model.state_dict().items():
        torch.testing.assert_close(resumed_rm.model.state_dict()[key], value, atol=1e-6, rtol=1e-5)
    assert resumed_rm.buffer == rm.buffer and resumed_rm.heldout == rm.heldout


def test_docs_section_runs():
    import doctest
    import re

    class Fenced(doctest.DocTestParser):
        def parse(self, string, name="<string>"):
            return super().parse(re.sub(r"^[ \t]*```.*$", "", string, flags=re.MULTILINE), name)

    text = (Path(__file__).parents[1] / "docs" / "objectives.md").read_text()
    section = text.split("## Online reward model", 1)[1].split("\n## ", 1)[0]
    test = Fenced().get_doctest(section, {}, "docs/objectives.md#online-reward-model", None, 0)
    runner = doctest.DocTestRunner()
    runner.run(test)
    assert len(test.examples) >= 4 and runner.failures == 0
