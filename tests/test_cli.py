"""The `trl-grpo-ext` command line: parsing, validation messages, dry runs, launcher hand-off, `tiny`, dispatch.

Everything here runs in-process and loads no model from the Hub; the training runs through the real CLI are in
tests/test_recipes.py (marked slow).
"""

import subprocess
import sys
import types
from pathlib import Path

import pytest

from trl_grpo_ext import __version__, cli

ROOT = Path(__file__).resolve().parents[1]
TINY_RECIPE = str(ROOT / "recipes" / "tiny" / "cpu-offline.yaml")


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if anything would load a model or a dataset."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a dry run must not load a model or a dataset")

    import datasets
    import transformers

    import trl_grpo_ext.kit
    import trl_grpo_ext.kit.tasks
    import trl_grpo_ext.kit.tiny

    monkeypatch.setattr(datasets, "load_dataset", forbidden)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", forbidden)
    monkeypatch.setattr(trl_grpo_ext.kit, "resolve_model_path", forbidden)
    monkeypatch.setattr(trl_grpo_ext.kit.tiny, "save_tiny", forbidden)
    monkeypatch.setattr(trl_grpo_ext.kit.tasks, "arithmetic_dataset", forbidden)
    monkeypatch.setattr(trl_grpo_ext.kit.tasks, "chat_addition_dataset", forbidden)


def write_recipe(tmp_path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


BASE = """\
model_name_or_path: tiny:tiny
dataset_preset: arithmetic
use_cpu: true
bf16: false
per_device_train_batch_size: 4
num_generations: 4
reward_objectives: {accuracy: 1.0}
"""


def run_train(capsys, *argv):
    code = cli.main(["train", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------------- top level
def test_help_lists_every_subcommand(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("train", "tiny", "demo", "report", "bench"):
        assert command in out


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert f"trl-grpo-ext {__version__}" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 0
    assert "train" in capsys.readouterr().out


def test_unknown_command_fails(capsys):
    assert cli.main(["trian"]) == 2
    assert "trian" in capsys.readouterr().err


def test_train_help(capsys):
    code, out, _ = run_train(capsys, "--help")
    assert code == 0
    for key in (
        "--temperature_schedule",
        "--advantage_estimator",
        "--reward_objectives",
        "--dataset_preset",
        "--lora_r",
    ):
        assert key in out


def test_python_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "trl_grpo_ext", "--version"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert __version__ in result.stdout


# ------------------------------------------------------------------------------------------------- dry run
def test_dry_run_prints_ladder_estimator_and_objectives(capsys, no_loading):
    code, out, err = run_train(capsys, "--config", TINY_RECIPE, "--dry-run")
    assert code == 0, err
    assert "K=4 temperatures at step 0: [0.7, 0.8, 0.9, 1.0]" in out
    assert "estimator:  rank (trl_grpo_ext.advantages:rank_advantages)" in out
    assert "accuracy=0.8" in out and "readability=0.1" in out and "novelty=0.1" in out
    assert "dry run OK" in out


def test_dry_run_command_line_overrides_recipe(capsys, no_loading):
    code, out, err = run_train(
        capsys,
        "--config",
        TINY_RECIPE,
        "--dry-run",
        "--num_generations",
        "2",
        "--temperature_range",
        "0.5",
        "1.5",
        "--reward_objectives",
        '{"accuracy": 0.5, "novelty": 0.5}',
        "--advantage_estimator",
        "zscore",
    )
    assert code == 0, err
    assert "K=2 temperatures at step 0: [0.5, 1.5]" in out
    assert "estimator:  zscore" in out
    assert "accuracy=0.5" in out and "readability" not in out.split("objectives:")[1].split("\n")[0]


def test_dry_run_schedule_shows_last_step(capsys, no_loading, tmp_path):
    recipe = write_recipe(
        tmp_path, BASE + "max_steps: 10\ntemperature_schedule: linear\ntemperature_range_final: [0.5, 0.8]\n"
    )
    code, out, err = run_train(capsys, "--config", recipe, "--dry-run")
    assert code == 0, err
    assert "at step 0: [0.7, 0.8, 0.9, 1.0]; at step 10: [0.5, 0.6, 0.7, 0.8]" in out


def test_dry_run_constant_ladder_is_trl(capsys, no_loading, tmp_path):
    code, out, err = run_train(capsys, "--config", write_recipe(tmp_path, BASE), "--dry-run")
    assert code == 0, err
    assert "constant (TRL): all K=4 completions at temperature=1.0" in out


def test_dry_run_summarises_the_online_reward_model(capsys, no_loading):
    code, out, err = run_train(capsys, "--config", str(ROOT / "recipes" / "tiny" / "online-rm.yaml"), "--dry-run")
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("online rm:"))
    assert "'tiny:tiny' scores `learned_preference`, labeler gold (objective='readability')" in line
    assert "label_budget=48" in line and "selector='uncertain'" in line and "not loaded by a dry run" in line


def test_trust_remote_code_stays_off(capsys, no_loading):
    code, out, _ = run_train(capsys, "--config", TINY_RECIPE, "--dry-run")
    assert code == 0
    assert "trust_remote_code=False" in out


def test_dry_run_without_config_file(capsys, no_loading):
    code, out, err = run_train(
        capsys,
        "--dry-run",
        "--model_name_or_path",
        "tiny:tiny",
        "--dataset_preset",
        "arithmetic",
        "--use_cpu",
        "true",
        "--reward_objectives",
        '{"accuracy": 1}',
    )
    assert code == 0, err
    assert "recipe:     (command line only)" in out


# ------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "extra, expected",
    [
        ("lerning_rate: 1.0e-5\n", ["unknown recipe key `lerning_rate`", "did you mean `learning_rate`"]),
        ("temperature_shedule: linear\n", ["`temperature_shedule`", "`temperature_schedule`"]),
    ],
)
def test_unknown_recipe_key(capsys, tmp_path, extra, expected):
    code, _, err = run_train(capsys, "--config", write_recipe(tmp_path, BASE + extra), "--dry-run")
    assert code == 2
    assert err.startswith("error: ")
    for text in expected:
        assert text in err


def test_unknown_command_line_option(capsys):
    code, _, err = run_train(capsys, "--config", TINY_RECIPE, "--dry-run", "--num_generatoins", "4")
    assert code == 2
    assert "unknown option `--num_generatoins`" in err and "--num_generations" in err


@pytest.mark.parametrize(
    "extra, name",
    [
        ("temperature_schedule: cubic\n", "temperature_schedule"),  # checked by GRPOExtConfig
        ("num_generations: four\n", "num_generations"),  # checked by argparse's type
        ("temperature_range: [1.0, 0.5]\n", "temperature_range"),
        ("dtype: float8\n", "dtype"),  # a ModelConfig choice, not checked by argparse for recipe values
        ("dataset_preset: mnist\n", "dataset_preset"),
        ("advantage_estimator: median\n", "advantage_estimator"),
        ("novelty_ngram: 0\n", "novelty_ngram"),
    ],
)
def test_bad_recipe_value(capsys, tmp_path, extra, name):
    code, _, err = run_train(capsys, "--config", write_recipe(tmp_path, BASE + extra), "--dry-run")
    assert code == 2
    assert err.startswith("error: ") and name in err
    assert len(err.strip().splitlines()) == 1, err  # one line, not argparse's page of usage


def test_bad_command_line_value(capsys):
    code, _, err = run_train(capsys, "--config", TINY_RECIPE, "--dry-run", "--learning_rate", "fast")
    assert code == 2
    assert "learning_rate" in err and "fast" in err


def test_unknown_objective(capsys, tmp_path):
    recipe = write_recipe(tmp_path, BASE.replace("{accuracy: 1.0}", "{accuracy: 0.7, helpfulness: 0.3}"))
    code, _, err = run_train(capsys, "--config", recipe, "--dry-run")
    assert code == 2
    assert "helpfulness" in err and "accuracy" in err  # names the bad objective and lists the valid ones


def test_unknown_objective_on_command_line(capsys):
    code, _, err = run_train(capsys, "--config", TINY_RECIPE, "--dry-run", "--reward_objectives", '{"wit": 1}')
    assert code == 2
    assert "wit" in err


@pytest.mark.parametrize(
    "recipe, expected",
    [
        (BASE.replace("model_name_or_path: tiny:tiny\n", ""), "`model_name_or_path` is required"),
        (BASE.replace("dataset_preset: arithmetic\n", ""), "No dataset"),
        (BASE.replace("reward_objectives: {accuracy: 1.0}\n", ""), "No reward"),
        (BASE + "reward_funcs: [no_such_reward]\n", "no_such_reward"),
        (BASE + "reward_funcs: [no_such_module.reward]\n", "no_such_module"),
    ],
)
def test_incomplete_recipe(capsys, tmp_path, recipe, expected):
    code, _, err = run_train(capsys, "--config", write_recipe(tmp_path, recipe), "--dry-run")
    assert code == 2
    assert expected in err


def test_missing_recipe_file(capsys, tmp_path):
    code, _, err = run_train(capsys, "--config", str(tmp_path / "nope.yaml"), "--dry-run")
    assert code == 2
    assert "nope.yaml" in err


def test_recipe_yaml_is_safe_loaded(capsys, tmp_path):
    marker = tmp_path / "pwned"
    recipe = write_recipe(tmp_path, BASE + f"output_dir: !!python/object/apply:os.system ['touch {marker}']\n")
    code, _, err = run_train(capsys, "--config", recipe, "--dry-run")
    assert code == 2
    assert "cannot parse the recipe" in err
    assert not marker.exists()


def test_gpu_recipe_checked_without_gpu(capsys, no_loading, tmp_path):
    pytest.importorskip("torch")
    from transformers.utils import is_torch_bf16_gpu_available

    if is_torch_bf16_gpu_available():
        pytest.skip("this machine has a bf16 GPU")
    recipe = write_recipe(tmp_path, BASE.replace("use_cpu: true\nbf16: false\n", "bf16: true\n"))
    code, out, err = run_train(capsys, "--config", recipe, "--dry-run")
    assert code == 0, err
    assert "note: no GPU here" in out
    # A real run would need the GPU: without --dry-run the TrainingArguments error is reported.
    code, _, err = run_train(capsys, "--config", recipe)
    assert code == 2 and "bf16" in err


def test_trl_reward_funcs_and_objectives_combine(capsys, no_loading, tmp_path):
    recipe = write_recipe(tmp_path, BASE + "reward_funcs: [think_format_reward]\nreward_weights: [0.5, 1.0]\n")
    code, out, err = run_train(capsys, "--config", recipe, "--dry-run")
    assert code == 0, err
    assert "rewards:    ['think_format_reward'] with reward_weights=[0.5, 1.0]" in out
    bad = write_recipe(tmp_path, BASE + "reward_funcs: [think_format_reward]\nreward_weights: [0.5]\n")
    code, _, err = run_train(capsys, "--config", bad, "--dry-run")
    assert code == 2 and "reward_weights" in err


def test_reward_funcs_resolution():
    from trl.rewards import think_format_reward

    from tests.helpers import digit_reward

    funcs = cli.train._trl_reward_funcs(["think_format_reward", "tests.helpers.digit_reward"])
    assert funcs == [think_format_reward, digit_reward]


# ------------------------------------------------------------------------------------------------- launcher keys
def test_launcher_keys_relaunch_through_accelerate(monkeypatch, tmp_path):
    import accelerate.commands.launch as launch

    calls = []
    monkeypatch.setattr(launch, "launch_command", calls.append)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv(cli.train._LAUNCHED_ENV, raising=False)
    recipe = write_recipe(tmp_path, BASE + "accelerate_config: multi_gpu\n")
    code = cli.main(["train", "--config", recipe, "--max_steps", "2", "--num_processes", "2", "--cpu"])
    assert code == 0
    (args,) = calls
    assert args.config_file.endswith("multi_gpu.yaml")  # TRL's named accelerate config, resolved as `trl grpo` does
    assert args.num_processes == 2 and args.cpu and args.module
    assert args.training_script == "trl_grpo_ext"
    assert args.training_script_args == ["train", "--config", recipe, "--max_steps", "2"]


def test_launcher_keys_ignored_inside_a_launcher(capsys, no_loading, monkeypatch):
    monkeypatch.setenv(cli.train._LAUNCHED_ENV, "1")  # as in a process we launched (torchrun sets LOCAL_RANK instead)
    code, out, err = run_train(capsys, "--config", TINY_RECIPE, "--dry-run", "--num_processes", "2")
    assert code == 0, err
    assert "launch:" not in out


def test_dry_run_shows_launch(capsys, no_loading, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv(cli.train._LAUNCHED_ENV, raising=False)
    code, out, err = run_train(capsys, "--config", TINY_RECIPE, "--dry-run", "--num_processes", "2")
    assert code == 0, err
    assert "launch:     accelerate launch --num_processes 2 -m trl_grpo_ext train" in out


# ------------------------------------------------------------------------------------------------- tiny, dispatch
def test_tiny_command_writes_a_loadable_model(capsys, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = tmp_path / "tiny-model"
    assert cli.main(["tiny", "--output-dir", str(out_dir), "--size", "tiny"]) == 0
    assert str(out_dir) in capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    assert model.config.model_type == "qwen2"
    assert tokenizer.chat_template
    assert (out_dir / "reward" / "config.json").exists()


def test_tiny_command_rejects_unknown_size(capsys, tmp_path):
    assert cli.main(["tiny", "--output-dir", str(tmp_path), "--size", "huge"]) == 2
    assert "huge" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "report", "bench"])
def test_dispatch_passes_argv(monkeypatch, command):
    received = []
    module_name = cli.COMMANDS[command][0]
    module = types.ModuleType(module_name)
    module.main = lambda argv=None: received.append(argv) or 3
    monkeypatch.setitem(sys.modules, module_name, module)
    assert cli.main([command, "--fast", "x"]) == 3
    assert received == [["--fast", "x"]]


def test_dispatch_to_a_missing_module(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "trl_grpo_ext.report", None)  # import of it raises ModuleNotFoundError
    assert cli.main(["report"]) == 2
    assert "trl_grpo_ext.report" in capsys.readouterr().err


PRINCIPLES_RECIPE = (
    BASE.replace("{accuracy: 1.0}", "{accuracy: 0.7, principles: 0.3}")
    + """\
principles:
  - Is the answer a single number?
  - {question: "Is the response free of insults?", weight: 2, name: polite}
judge: {base_url: "http://127.0.0.1:8000/v1", model: judge, api_key_env: JUDGE_TEST_KEY, timeout: 30}
reward_error_policy: skip
"""
)


def test_dry_run_checks_principles_and_judge_without_loading(capsys, no_loading, tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-dry-run-secret")
    code, out, err = run_train(capsys, "--config", write_recipe(tmp_path, PRINCIPLES_RECIPE), "--dry-run")
    assert code == 0, err
    assert "principles=0.3 (trl_grpo_ext.rewards.principles:principles)" in out
    assert "is_the_answer_a_single_number (w=1): 'Is the answer a single number?'" in out
    assert "polite (w=2): 'Is the response free of insults?'" in out
    assert "http://127.0.0.1:8000/v1/completions model 'judge' (key from $JUDGE_TEST_KEY), timeout=30 s" in out
    assert "sk-dry-run-secret" not in out + err


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("", "'JUDGE_TEST_KEY', which is not set"),  # the key's variable is checked, the server is not called
        ('judge: {"base_url": "http://h/v1", "model": "j", "timout": 3}\n', "did you mean 'timeout'"),
    ],
)
def test_dry_run_reports_a_bad_judge(capsys, no_loading, tmp_path, monkeypatch, extra, expected):
    monkeypatch.delenv("JUDGE_TEST_KEY", raising=False)
    code, _, err = run_train(capsys, "--config", write_recipe(tmp_path, PRINCIPLES_RECIPE + extra), "--dry-run")
    assert code == 2 and expected in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_judge_as_json_on_the_command_line(capsys, no_loading):
    code, out, err = run_train(
        capsys,
        "--config",
        TINY_RECIPE,
        "--dry-run",
        "--reward_objectives",
        '{"accuracy": 0.8, "principles": 0.2}',
        "--principles",
        '["Is it short?"]',
        "--judge",
        '{"model": "tiny:small", "batch_size": 8}',
    )
    assert code == 0, err
    assert "judge:      local causal LM 'tiny:small', batch_size=8" in out and "not loaded by a dry run" in out
