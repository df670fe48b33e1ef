"""The online reward model refuses what would corrupt it, and its checkpoints survive a kill.

Refused at construction (in Python and in the config block): a name that is not a plain folder name, values that
used to escape validation (unhashable, overflowing, unparsable), a learning rate above 1. A non-finite loss or
gradient is never applied. A resume that would drop the learnt model (a renamed objective) is refused, and one that
changed the model or the labeler says so. A SIGKILL inside the reward model's save leaves a checkpoint to resume from.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from tests.helpers import REPO_ROOT, build_trainer
from trl_grpo_ext import GRPOExtConfig
from trl_grpo_ext.rewards import GoldLabeler, ObjectiveError, OnlineRewardModel, WeightedReward, accuracy
from trl_grpo_ext.rewards.online_config import check_online_reward_model_config


def digit_fraction(prompts, completions, **kwargs):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


BATCH = dict(
    prompts=["1+2="] * 4 + ["3+4="] * 4,
    completions=["3", "12 apples", "abc", "3!", "7", "x7y", "seven", "77"],
    answer=["3"] * 4 + ["7"] * 4,
    num_generations=4,
)


def _weights(rm: OnlineRewardModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in rm.model.state_dict().items()}


def _config(**block) -> dict:
    return check_online_reward_model_config({"model": "tiny:tiny", **block})


# ---------------------------------------------------------------------------------------------------- the name
@pytest.mark.parametrize("name", ["..", ".", "../checkpoint-1", "a/b", "a\\b", "", "rm name", "rm\n", "r\u00e9", 7])
def test_a_name_that_is_not_a_plain_folder_name_is_refused(name, tmp_path):
    # ".." made the reward model save its weights over the policy's checkpoint-N/model.safetensors.
    allowed = r"must be 1 or more ASCII letters, digits, '_' or '-' \(it names the metrics and the checkpoint folder"
    with pytest.raises(ValueError, match=rf"`name` {allowed}.*got {re.escape(repr(name))}\."):
        OnlineRewardModel("tiny:tiny", name=name)
    with pytest.raises(ValueError, match=rf"`online_reward_model.name` {allowed}"):
        _config(name=name)
    with pytest.raises(ValueError, match=rf"`online_reward_model.name` {allowed}"):
        GRPOExtConfig(
            str(tmp_path),
            use_cpu=True,
            bf16=False,
            reward_objectives={"learned_preference": 1.0},
            online_reward_model={"model": "tiny:tiny", "name": name},
        )


def test_a_plain_name_is_kept():
    assert OnlineRewardModel("tiny:tiny", name="prefs-2_b").name == "prefs-2_b"
    assert _config(name="prefs-2_b")["name"] == "prefs-2_b"


# ---------------------------------------------------------------------------------------------------- values
@pytest.mark.parametrize(
    "block, message",
    [
        (
            {"selector": ["random"]},
            r"`online_reward_model.selector` must be one of \['random', 'uncertain'\], got \['random'\]",
        ),
        (
            {"labeler": {"type": ["gold"]}},
            r"`online_reward_model.labeler` must be a mapping whose `type` is one of \['gold', 'judge', 'queue'\] .*"
            r"got \['gold'\]",
        ),
        (
            {"buffer_size": 10**30},
            r"`online_reward_model.buffer_size` must be an integer >= 1 and <= 10000000, got 1000",
        ),
        (
            {"heldout_size": 10**30},
            r"`online_reward_model.heldout_size` must be an integer >= 1 and <= 10000000, got 1",
        ),
        ({"max_length": 10**30}, r"`online_reward_model.max_length` must be an integer >= 1 and <= 10000000 or None"),
        ({"device": "gpu-please"}, r"`online_reward_model.device` must be a torch device .*, got 'gpu-please'"),
        (
            {"learning_rate": 1e30},
            r"`online_reward_model.learning_rate` must be a finite number > 0 and <= 1, got 1e\+30",
        ),
    ],
)
def test_config_values_that_escaped_validation_are_refused(block, message):
    with pytest.raises(ValueError, match=message):
        _config(**block)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(buffer_size=10**30), r"`buffer_size` must be an integer >= 1 and <= 10000000, got 1000000"),
        (dict(heldout_size=10**7 + 1), r"`heldout_size` must be an integer >= 1 and <= 10000000, got 10000001"),
        (dict(max_length=10**30), r"`max_length` must be an integer >= 1 and <= 10000000 or None, got 1000"),
        (dict(device="gpu-please"), r"`device` must be a torch device .*, got 'gpu-please'"),
        (dict(learning_rate=1e30), r"`learning_rate` must be a finite number > 0 and <= 1, got 1e\+30"),
        (dict(learning_rate=1.5), r"`learning_rate` must be a finite number > 0 and <= 1, got 1.5"),
    ],
)
def test_constructor_values_that_escaped_validation_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OnlineRewardModel("tiny:tiny", **kwargs)


def test_values_at_the_bounds_are_accepted():
    rm = OnlineRewardModel("tiny:tiny", buffer_size=10**7, heldout_size=10**7, learning_rate=1, device="cpu")
    assert (rm.buffer_size, rm.heldout_size, rm.learning_rate) == (10**7, 10**7, 1.0)
    assert rm.model.device == torch.device("cpu")
    assert _config(device="cuda:1", selector="uncertain")["device"] == "cuda:1"  # parsed, not looked up


# ---------------------------------------------------------------------------------------------------- non-finite steps
def test_a_non_finite_loss_is_not_applied(caplog):
    # A margin of 1e38 (a finite number, accepted) overflows the mean loss to inf; its gradients are finite.
    rm = OnlineRewardModel(
        "tiny:tiny", labeler=GoldLabeler(digit_fraction), margin=1e38, heldout_fraction=0.0, error_policy="skip"
    )
    before = _weights(rm)
    logged = []
    with caplog.at_level(logging.WARNING, logger="trl_grpo_ext.rewards.online"):
        for _ in range(2):
            rm(**BATCH, log_metric=lambda key, value: logged.append((key, value)))
    assert all(torch.equal(before[k], v) for k, v in rm.model.state_dict().items())
    assert rm.updates == 0 and "rm/loss" not in dict(logged)
    assert [v for k, v in logged if k == "rm/skipped_steps"] == [1.0, 1.0]
    assert rm.labels_used == 16 and len(rm.buffer) == 16  # the labels stay, for replay
    warnings = [r.getMessage() for r in caplog.records if "optimizer step is not applied" in r.getMessage()]
    assert len(warnings) == 1 and "loss is inf" in warnings[0]

    strict = OnlineRewardModel("tiny:tiny", labeler=GoldLabeler(digit_fraction), margin=1e38, error_policy="raise")
    before = _weights(strict)
    with pytest.raises(ObjectiveError, match=r"Objective 'rm': the reward-model loss is inf .* not applied"):
        strict(**BATCH)
    assert all(torch.equal(before[k], v) for k, v in strict.model.state_dict().items())


def test_non_finite_gradients_are_not_applied():
    # A finite reward model whose score head is so large that the gradients overflow to NaN (the loss is finite):
    # the step made every weight NaN, and every later reward NaN.
    rm = OnlineRewardModel("tiny:tiny", labeler=GoldLabeler(digit_fraction), error_policy="skip", update_steps=3)
    with torch.no_grad():
        rm.model.score.weight.mul_(1e38)
    before = _weights(rm)
    assert all(torch.isfinite(v).all() for v in before.values())
    logged = {}
    scores = rm(**BATCH, log_metric=logged.__setitem__)
    assert all(torch.equal(before[k], v) for k, v in rm.model.state_dict().items())
    assert logged["rm/skipped_steps"] == 3.0 and rm.updates == 0
    assert rm(**BATCH) == pytest.approx(scores)  # still a finite reward model: the same scores


def test_learning_rate_above_one_cannot_wreck_the_model():
    # The highest accepted learning rate keeps the weights finite after updates (1e30 made them NaN).
    rm = OnlineRewardModel("tiny:tiny", labeler=GoldLabeler(digit_fraction), learning_rate=1.0, error_policy="skip")
    for _ in range(3):
        scores = rm(**BATCH)
    assert all(torch.isfinite(v).all() for v in rm.model.state_dict().values())
    assert all(s == s for s in scores) and rm.updates == 3


# ---------------------------------------------------------------------------------------------------- resume
def _args(tmp_path, checkpoint=None) -> TrainingArguments:
    return TrainingArguments(
        str(tmp_path / "run"), report_to="none", use_cpu=True, resume_from_checkpoint=checkpoint and str(checkpoint)
    )


def _saved_checkpoint(tmp_path, rm: OnlineRewardModel, step: int = 2) -> tuple[Path, TrainerState]:
    """What a run with `rm` leaves at `step`, through transformers' callback protocol: the reward model's folder, and
    trainer_state.json with its entry. Returns the checkpoint and the state a resumed run loads."""
    args, control = _args(tmp_path), TrainerControl(should_save=True)
    rm(**BATCH)  # 8 labels learnt
    rm.on_step_end(args, TrainerState(global_step=step), control)
    state = TrainerState(global_step=step, stateful_callbacks=[rm])
    rm.on_save(args, state, control)
    checkpoint = tmp_path / "run" / f"checkpoint-{step}"
    state.save_to_json(str(checkpoint / "trainer_state.json"))
    return checkpoint, TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


def test_the_settings_record_the_model_and_the_labeler():
    rm = OnlineRewardModel("tiny:tiny", labeler=GoldLabeler(accuracy))
    assert rm.settings()["model"] == "tiny:tiny" and rm.settings()["labeler"] == "GoldLabeler(accuracy)"
    rm.labeler = digit_fraction
    assert rm.settings()["labeler"] == f"{__name__}.digit_fraction"
    assert OnlineRewardModel(rm.model, rm.tokenizer).settings()["model"] == rm.model.config._name_or_path


def test_a_renamed_reward_model_is_refused_on_resume(tmp_path):
    checkpoint, state = _saved_checkpoint(
        tmp_path, OnlineRewardModel("tiny:tiny", labeler=GoldLabeler(digit_fraction))
    )
    renamed = OnlineRewardModel("tiny:tiny", labeler=GoldLabeler(digit_fraction), name="prefs")
    with pytest.raises(
        ValueError,
        match=r"checkpoint of step 2 holds the online reward model 'rm' \(8 labels used\), but this run's is named "
        r"'prefs'.*Set the name back .*name: rm.* or start a fresh run",
    ):
        renamed.on_train_begin(_args(tmp_path, checkpoint), state, TrainerControl())
    assert renamed.labels_used == 0
    same = OnlineRewardModel("tiny:tiny", labeler=GoldLabeler(digit_fraction))
    same.on_train_begin(_args(tmp_path, checkpoint), state, TrainerControl())
    assert same.labels_used == 8


def test_a_training_run_resumed_under_another_name_is_refused(tmp_path):
    # Through GRPOExtTrainer, from the config block.
    def train(name, resume=None):
        block = {"model": "tiny:tiny", "name": name, "labeler": {"type": "gold", "objective": "accuracy"}}
        trainer = build_trainer(
            tmp_path,
            reward_funcs=None,
            reward_objectives={"accuracy": 0.5, "learned_preference": 0.5},
            online_reward_model=block,
            reward_error_policy="skip",
            max_steps=1,
            save_strategy="steps",
            save_steps=1,
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    train("rm")
    checkpoint = tmp_path / "run" / "checkpoint-1"
    assert (checkpoint / "online_rm" / "rm" / "state.json").is_file()
    with pytest.raises(ValueError, match=r"holds the online reward model 'rm' .* this run's is named 'prefs'"):
        train("prefs", resume=str(checkpoint))

    # A reward model added next to the one the checkpoint holds is new: it starts fresh, the other one resumes.
    kept, added = (OnlineRewardModel("tiny:tiny", labeler=GoldLabeler(accuracy), name=n) for n in ("rm", "extra"))
    trainer = build_trainer(
        tmp_path,
        reward_funcs=WeightedReward({"rm": kept, "extra": added}),
        reward_error_policy="skip",
        max_steps=2,
        save_strategy="steps",
        save_steps=1,
    )
    trainer.train(resume_from_checkpoint=str(checkpoint))
    saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]["OnlineRewardModel"]
    assert kept.updates == saved["attributes"]["updates"] + 1 and added.updates == 1


def test_a_changed_labeler_or_model_is_named_on_resume(tmp_path):
    checkpoint, state = _saved_checkpoint(
        tmp_path, OnlineRewardModel("tiny:tiny", labeler=GoldLabeler(digit_fraction))
    )
    relabelled = OnlineRewardModel("tiny:tiny@1", labeler=GoldLabeler(accuracy))
    with pytest.warns(
        UserWarning, match="Online reward model 'rm': the checkpoint was saved with other settings"
    ) as record:
        relabelled.on_train_begin(_args(tmp_path, checkpoint), state, TrainerControl())
    message = next(str(r.message) for r in record if "other settings" in str(r.message))
    assert "model 'tiny:tiny' -> 'tiny:tiny@1'" in message
    assert "labeler 'GoldLabeler(digit_fraction)' -> 'GoldLabeler(accuracy)'" in message
    assert "weights are the checkpoint's" in message and relabelled.labels_used == 8
    saved = OnlineRewardModel("tiny:tiny")
    saved.load_state(checkpoint / "online_rm" / "rm")
    for key, value in saved.model.state_dict().items():
        assert torch.equal(relabelled.model.state_dict()[key], value)

    other_architecture = OnlineRewardModel("tiny:small", labeler=GoldLabeler(accuracy))
    with pytest.raises(
        ValueError,
        match=r"(?s)learnt from 'tiny:tiny' and cannot be loaded into this run's `model` "
        r"'tiny:small'.*Set `model` back to 'tiny:tiny'",
    ):
        other_architecture.on_train_begin(_args(tmp_path, checkpoint), state, TrainerControl())


# ---------------------------------------------------------------------------------------------------- a kill in a save
KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path

    import safetensors.torch

    from tests.helpers import build_trainer, prompt_dataset
    from trl_grpo_ext.rewards import GoldLabeler, OnlineRewardModel, WeightedReward, accuracy

    out, kill_step, resume = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None
    write_weights = safetensors.torch.save_model  # the reward model's weights writer (the policy's is save_file)

    def write_then_die(model, filename, *args, **kwargs):
        write_weights(model, filename, *args, **kwargs)
        if f"checkpoint-{kill_step}" in str(filename):
            os.kill(os.getpid(), signal.SIGKILL)  # inside the reward model's save, its weights half of it

    safetensors.torch.save_model = write_then_die
    rm = OnlineRewardModel("tiny:tiny", labeler=GoldLabeler(accuracy), pairs_per_update=4, heldout_fraction=0.0)
    trainer = build_trainer(
        out,
        reward_funcs=WeightedReward({"rm": rm}),
        dataset=prompt_dataset(16),
        max_steps=3,
        save_strategy="steps",
        save_steps=1,
        save_total_limit=1,
        reward_error_policy="skip",
    )
    trainer.train(resume_from_checkpoint=resume)
    print("finished", trainer.state.global_step, rm.labels_used, flush=True)
    """
)


def _latest_checkpoint(run: Path) -> Path:
    """The newest checkpoint that transformers finished writing (its trainer_state.json is there)."""
    written = [c for c in run.glob("checkpoint-*") if (c / "trainer_state.json").is_file()]
    assert written, f"no checkpoint to resume from in {sorted(p.name for p in run.iterdir())}"
    return max(written, key=lambda c: int(c.name.rpartition("-")[2]))


@pytest.mark.slow
def test_a_kill_inside_the_reward_models_save_leaves_a_checkpoint_to_resume_from(tmp_path):
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    run = tmp_path / "run"

    def launch(*args):
        command = [sys.executable, str(script), str(tmp_path), *map(str, args)]
        return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)

    killed = launch(2)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-4000:]
    checkpoint = _latest_checkpoint(run)
    # Killed before transformers wrote checkpoint-2, so checkpoint-1 was not rotated away.
    assert checkpoint.name == "checkpoint-1" and not (run / "checkpoint-2" / "trainer_state.json").exists()
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["OnlineRewardModel"]["attributes"]["name"] == "rm"
    assert (checkpoint / "online_rm" / "rm" / "state.json").is_file()  # what trainer_state.json promises is there

    resumed = launch(99, checkpoint)  # 99: no kill
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-4000:]
    finished = resumed.stdout.strip().splitlines()[-1].split()
    labels = state["stateful_callbacks"]["OnlineRewardModel"]["attributes"]["labels_used"]
    assert finished == ["finished", "3", str(labels + 4 * 2)]  # 4 labels a step, counted on from the checkpoint's
    final = json.loads((run / "checkpoint-3" / "trainer_state.json").read_text())
    assert final["global_step"] == 3
    assert (run / "checkpoint-3" / "online_rm" / "rm" / "state.json").is_file()


# ---------------------------------------------------------------------------------------------------- the settings
SIGNATURE = {  # OnlineRewardModel's call signature: stable (the settings are written once, in OnlineRewardModelSettings)
    "model": inspect.Parameter.empty,
    "tokenizer": None,
    "labeler": None,
    "name": "rm",
    "update_every": 1,
    "label_budget": None,
    "pairs_per_update": 8,
    "selector": "random",
    "buffer_size": 1024,
    "replay_pairs": None,
    "heldout_fraction": 0.2,
    "heldout_size": 256,
    "seed_pairs": None,
    "seed_epochs": 1,
    "update_steps": 1,
    "learning_rate": 1e-5,
    "weight_decay": 0.0,
    "margin": 0.0,
    "max_grad_norm": 1.0,
    "batch_size": 32,
    "max_length": None,
    "num_generations": None,
    "error_policy": None,
    "seed": 0,
    "device": None,
}


def test_the_signature_and_the_docstring_are_made_from_the_settings():
    params = inspect.signature(OnlineRewardModel).parameters
    assert {name: p.default for name, p in params.items()} == SIGNATURE
    assert all(params[name].kind is inspect.Parameter.KEYWORD_ONLY for name in list(SIGNATURE)[3:])
    for name in list(SIGNATURE)[3:]:
        assert f"        {name} (`" in OnlineRewardModel.__doc__, name
    assert "<settings>" not in OnlineRewardModel.__doc__


def test_an_unknown_or_positional_setting_is_a_type_error_before_loading():
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'budget' \(did you mean 'label_budget'\?\)"):
        OnlineRewardModel("no/such/model", budget=8)
    with pytest.raises(TypeError):
        OnlineRewardModel("no/such/model", None, None, "rm")


def test_the_settings_a_checkpoint_records_are_unchanged():
    from trl_grpo_ext.rewards import OnlineRewardModelSettings

    assert OnlineRewardModelSettings.recorded() == (
        "update_every",
        "label_budget",
        "pairs_per_update",
        "buffer_size",
        "replay_pairs",
        "heldout_fraction",
        "heldout_size",
        "update_steps",
        "learning_rate",
        "weight_decay",
        "margin",
        "seed",
    )
    rm = OnlineRewardModel("tiny:tiny", labeler=GoldLabeler(accuracy))
    assert list(rm.settings()) == [*OnlineRewardModelSettings.recorded(), "selector", "model", "labeler"]
    assert rm.settings()["labeler"] == "GoldLabeler(accuracy)" and rm.settings()["model"] == "tiny:tiny"
