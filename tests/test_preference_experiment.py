"""`trl-grpo-ext preference-experiment` (issue #23): the seed sets, the selector, the exploitation rule, and the quick
grid end to end: every arm finishes, the online arms stay within their label budget, frozen reward models do not
move and online ones do, and a second call resumes without training."""

from __future__ import annotations

import doctest
import json
import random

import pytest

from trl_grpo_ext.experiment import preference
from trl_grpo_ext.experiment.preference import (
    ARMS,
    CONDITIONS,
    QUICK_SETTINGS,
    decided_pairs,
    exploited,
    random_pairs,
    seed_set,
    select_top,
)
from trl_grpo_ext.rewards.online import group_pairs


def test_doctests():
    assert doctest.testmod(preference, raise_on_error=False).failed == 0


GROUPS = [
    {
        "prompt": "rev 123=",
        "answer": "321",
        "completions": ["321", "32", "3211", "312", "321"],
        "gold": [1, 0, 0, 0, 1],
    },
    {"prompt": "rev 45=", "answer": "54", "completions": ["54", "5", "", "45", "544"], "gold": [1, 0, 0, 0, 0]},
]


def test_seed_sets_plain_and_spurious():
    plain = [p for g in GROUPS for p in decided_pairs(g["prompt"], g["completions"], g["gold"], g["answer"])]
    assert len(plain) == 3 + 4  # identical right answers are one text: 3 distinct wrong ones, then 4
    assert all(p["chosen"] == p["answer"] for p in plain)
    spurious = seed_set(GROUPS, 3, "spurious", random.Random(0))
    # The winner is also the longer completion in every pair: "longer wins" explains the whole seed set.
    assert all(len(p["chosen"]) > len(p["rejected"]) for p in spurious)
    assert sorted(p["rejected"] for p in spurious) == ["", "32", "5"]
    with pytest.raises(ValueError, match="hold 3 spurious decided pairs, fewer than the seed set's 4"):
        seed_set(GROUPS, 4, "spurious", random.Random(0))
    assert len(seed_set(GROUPS, 7, "plain", random.Random(0))) == 7
    extra = random_pairs(GROUPS, 12, random.Random(0))
    assert {p["label"] for p in extra} <= {0.0, 0.5, 1.0} and all(p["a"] != p["b"] for p in extra)


def test_select_top_pairs_each_groups_best_with_another():
    scores = [0.0, 3.0, 1.0, 0.5, 2.0, 0.1, 0.2, 0.3]
    pairs = group_pairs(8, 4)
    chosen = select_top(4)(pairs, 2, scores, random.Random(0))
    assert len(chosen) == 2 and all(1 in p or 4 in p for p in chosen)  # the tops of groups 0-3 and 4-7
    assert {p[0] // 4 for p in chosen} == {0, 1}  # one pair per group before a second
    assert len(select_top(4)(pairs, 5, scores, random.Random(0))) == 5
    assert select_top(4)(pairs, 20, scores, random.Random(0)) == sorted(p for p in pairs if 1 in p or 4 in p)


def test_exploited_needs_the_proxy_up_and_gold_5_points_below_its_peak():
    log = [{"rewards/rm/mean": 0.1 * s} for s in range(20)]
    run = {"log": log, "curve": [{"accuracy": a} for a in (0.30, 0.36, 0.31)]}
    assert exploited(run) is True
    assert exploited({**run, "curve": [{"accuracy": a} for a in (0.30, 0.36, 0.32)]}) is False  # 4 points
    assert exploited({**run, "log": log[::-1]}) is False  # the proxy fell
    assert exploited({"log": [{}], "curve": run["curve"]}) is None  # no proxy: the gold arm


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("preference")
    assert preference.main(["--quick", "--output-dir", str(root)]) == 0
    return root


def test_quick_grid_numbers(quick):
    summary = json.loads((quick / "results.json").read_text())
    assert summary["missing"] == []
    runs = {
        (r.parent.parent.parent.name, r.parent.parent.name): json.loads(r.read_text())
        for r in (quick / "runs").glob("*/*/seed0/result.json")
    }
    expected = {("shared", "gold")} | {(c, a) for c in CONDITIONS for a in preference.DEFAULT_ARMS if a != "gold"}
    assert set(runs) == expected  # every arm finished, gold once for both conditions
    settings = QUICK_SETTINGS
    budget = settings.pairs_per_update * settings.grpo_steps
    proxy = json.loads((preference.proxy_dir(quick, 0, settings) / "proxy.json").read_text())
    for (condition, arm), r in runs.items():
        assert r["steps"] == settings.grpo_steps and 0.0 <= r["test_accuracy"] <= 1.0
        assert len(r["curve"]) == settings.grpo_steps + 1 and len(r["log"]) == settings.grpo_steps
        assert all("rewards/gold/mean" in e for e in r["log"])  # the gold of the samples, at weight 0 or 1
        if arm == "gold":
            assert r["labels_used"] == 0 and all(f"rewards/proxy_{c}/mean" in r["log"][0] for c in CONDITIONS)
            continue
        kind = ARMS[arm]["rm"]
        assert r["rm_start_digest"] == proxy["conditions"][condition][kind]["digest"]  # the cached proxy
        if arm.startswith("online"):
            assert 0 < r["labels_used"] <= budget == r["label_budget"]
            assert r["labels_used"] / r["scored_completions"] <= settings.label_fraction
            assert r["rm_weights_changed"] and r["rm_updates"] > 0
        else:
            assert r["labels_used"] == 0 and r["rm_updates"] == 0
            assert not r["rm_weights_changed"] and r["rm_end_digest"] == r["rm_start_digest"]
    spurious = proxy["conditions"]["spurious"]
    assert spurious["seed_set_longer_wins"] == 1.0
    assert spurious["matched"]["pairs"] == settings.seed_set_size + budget
    md = (quick / "results.md").read_text()
    assert "## Seed set `plain`" in md and "online_top beats frozen_matched" in md
    assert (quick / "plots" / "plain.png").stat().st_size > 1000


def test_quick_grid_resumes_and_refuses_other_settings(quick, monkeypatch, capsys):
    before = {p: p.stat().st_mtime_ns for p in (quick / "runs").rglob("result.json")}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(preference, "run_job", no_training)
    assert preference.main(["--quick", "--output-dir", str(quick)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (quick / "runs").rglob("result.json")} == before
    assert "9/9 runs finished" in capsys.readouterr().out
    assert preference.main(["--quick", "--output-dir", str(quick), "--steps", "4"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_cli_registers_the_subcommand():
    from trl_grpo_ext import cli

    assert "preference-experiment" in cli.COMMANDS
    with pytest.raises(SystemExit) as exit_:
        cli.dispatch("preference-experiment", ["--help"])
    assert exit_.value.code == 0
