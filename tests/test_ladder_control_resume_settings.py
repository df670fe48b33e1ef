"""The closed-loop ladder resumed with other controller settings: the new settings hold, the saved scale is clipped
into their bounds, and a warning names what changed (docs/reliability.md, "Hardening 2", item 3)."""

from __future__ import annotations

import json
import warnings

import pytest
from transformers import TrainerState

from tests.helpers import build_trainer
from trl_grpo_ext.sampling import LadderController

# ------------------------------------------------------------------------------------ 3. closed-loop resume
CONTROL = dict(
    temperature_schedule="linear",
    temperature_control="zero_std",
    temperature_control_tolerance=0.0,
    save_strategy="steps",
    save_steps=1,
)


def _distinct_reward(completions, **kwargs):
    return [float(i) for i in range(len(completions))]  # never a silent group: the ladder cools


@pytest.fixture(scope="module")
def cooled_checkpoint(tmp_path_factory):
    """Run A: range [1, 2] (scale bounds [0.1, 1]), target 0.5, cooled to scale 0.1 in one step, saved."""
    tmp_path = tmp_path_factory.mktemp("run_a")
    trainer = build_trainer(
        tmp_path,
        reward_funcs=[_distinct_reward],
        **CONTROL,
        temperature_range=[1.0, 2.0],
        temperature_control_target=0.5,
        temperature_control_rate=10.0,
        max_steps=1,
    )
    trainer.train()
    checkpoint = tmp_path / "run" / "checkpoint-1"
    saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]["LadderController"]
    assert saved["attributes"]["scale"] == pytest.approx(0.1) and saved["args"]["temperature_range"] == [1.0, 2.0]
    return checkpoint


@pytest.mark.parametrize("restore_callbacks", [False, True])
def test_resume_with_other_controller_settings_keeps_the_new_ones(tmp_path, cooled_checkpoint, restore_callbacks):
    """Run B resumes run A with range [0.2, 0.4] (scale bounds [0.5, 5]) and target 0.2: the saved scale 0.1 is
    clipped to 0.5, so the first resumed ladder is [0.1, 0.2] (shape kept, not [0.1, 0.1]), and B's target holds."""
    trainer = build_trainer(
        tmp_path,
        reward_funcs=[_distinct_reward],
        **CONTROL,
        temperature_range=[0.2, 0.4],
        temperature_control_target=0.2,
        temperature_control_rate=1.0,
        max_steps=2,
        restore_callback_states_from_checkpoint=restore_callbacks,
    )
    with pytest.warns(UserWarning, match=r"temperature_range \[1.0, 2.0\] -> \[0.2, 0.4\]") as record:
        trainer.train(resume_from_checkpoint=str(cooled_checkpoint))
    (warning,) = [w for w in record if "LadderController" in str(w.message)]
    assert "target 0.5 -> 0.2" in str(warning.message) and "rate 10.0 -> 1.0" in str(warning.message)
    (step_2,) = [e for e in trainer.state.log_history if e.get("step") == 2 and "ladder/t_min" in e]  # 1 is A's
    assert (step_2["ladder/t_min"], step_2["ladder/t_max"]) == pytest.approx((0.1, 0.2))  # before: (0.1, 0.1)
    assert step_2["ladder/zero_std_target"] == 0.2
    controller = trainer.ladder_controller
    assert (controller.temperature_range, controller.target, controller.rate) == ([0.2, 0.4], 0.2, 1.0)
    assert controller.updates == 2 and controller.scale == pytest.approx(0.5)  # colder, but held at B's floor
    saved = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["LadderController"]["args"]["temperature_range"] == [0.2, 0.4]


def test_controller_restore_compares_the_recorded_settings(tmp_path):
    """Callback level, both of transformers' paths: equal settings restore exactly and silently; other settings
    keep the new ones, clip the scale into the new bounds and warn, even when the controller was rebuilt from the
    checkpoint's args (`restore_callback_states_from_checkpoint`)."""
    from tests.helpers import tiny_args

    old = LadderController([1.0, 2.0], [0.1, 2.0], target=0.5, rate=0.7, tolerance=0.1)
    for _ in range(12):
        old.update(0.0)
    assert old.scale == pytest.approx(0.1)
    TrainerState(stateful_callbacks=[old]).save_to_json(str(tmp_path / "trainer_state.json"))

    same = LadderController([1.0, 2.0], [0.1, 2.0], target=0.5, rate=0.7, tolerance=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same.on_train_begin(None, TrainerState.load_from_json(str(tmp_path / "trainer_state.json")), None)
    assert same.state() == old.state()

    new_args = tiny_args(
        tmp_path,
        temperature_schedule="linear",
        temperature_control="zero_std",
        temperature_range=[0.2, 0.4],
        temperature_control_target=0.2,
    )
    saved = json.loads((tmp_path / "trainer_state.json").read_text())["stateful_callbacks"]["LadderController"]
    for controller in (LadderController.from_config(new_args), LadderController.from_state(saved)):
        with pytest.warns(UserWarning, match="other settings") as record:
            controller.on_train_begin(
                new_args, TrainerState.load_from_json(str(tmp_path / "trainer_state.json")), None
            )
        message = str(record[0].message)
        for change in ("temperature_range [1.0, 2.0] -> [0.2, 0.4]", "target 0.5 -> 0.2", "rate 0.7 -> 0.5"):
            assert change in message, message
        assert "clipped" in message and "0.5" in message
        assert controller.temperature_range == [0.2, 0.4] and controller.target == 0.2 and controller.rate == 0.5
        assert controller.scale == pytest.approx(0.5) and controller.updates == 12
        assert controller.apply([0.2, 0.3, 0.4]) == pytest.approx([0.1, 0.15, 0.2])
