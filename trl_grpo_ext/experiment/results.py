"""Summarise finished runs: results.json, results.md (tables and verdicts) and one PNG per reward condition."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .arms import COMPARISONS
from .stats import mean_se, paired_difference, verdict


def _by_seed(runs: list[dict], key) -> dict[int, float]:
    return {r["seed"]: key(r) for r in runs}


def _mean_log(run: dict, key: str) -> float:
    values = [e[key] for e in run["log"] if key in e and e[key] is not None and not math.isnan(e[key])]
    return sum(values) / len(values) if values else math.nan


def _distinct_log(run: dict) -> list[dict]:
    """Distinct completions per group, per step: the reward's record (every arm), else the trainer's
    `ladder/distinct_frac` (logged only with a ladder; runs written before the reward recorded it)."""
    by_batch = run.get("distinct_frac_by_batch")
    if not by_batch:
        return [
            {"step": e["step"], "distinct_frac": e["ladder/distinct_frac"]}
            for e in run["log"]
            if e.get("ladder/distinct_frac") is not None
        ]
    per_batch = max(run["steps"], 1) / len(by_batch)  # generation batches per optimiser step
    return [{"step": round((i + 1) * per_batch), "distinct_frac": v} for i, v in enumerate(by_batch)]


def _mean_distinct(run: dict) -> float:
    return _mean_log({"log": _distinct_log(run)}, "distinct_frac")


def summarise(results: list[dict], warm_starts: dict[int, dict], expected: list[tuple[str, str, int]]) -> dict:
    """Group results by cell and arm; means, standard errors and the paired comparisons of `arms.COMPARISONS`."""
    cells: dict[str, dict] = {}
    for r in results:
        cell = cells.setdefault(r["cell"], {"condition": r["condition"], "level": r["level"], "runs": {}})
        cell["runs"].setdefault(r["arm"], []).append(r)
    summary: dict[str, dict] = {}
    for name, cell in cells.items():
        arms = {}
        for arm, runs in cell["runs"].items():
            runs.sort(key=lambda r: r["seed"])
            test = _by_seed(runs, lambda r: r["test_accuracy"])
            gain = {
                s: v - warm_starts[s]["test_accuracy"]
                for s, v in test.items()
                if "test_accuracy" in warm_starts.get(s, {})
            }
            entropy_final = _by_seed(runs, lambda r: r["curve"][-1]["entropy"])
            entropy_drop = _by_seed(runs, lambda r: r["curve"][0]["entropy"] - r["curve"][-1]["entropy"])
            slots = [r["clean_accuracy_by_slot"] for r in runs]
            distinct = _by_seed(runs, _mean_distinct)
            arms[arm] = {
                "seeds": sorted(test),
                "test_accuracy": test,
                "test_mean_se": mean_se(list(test.values())),
                "gain": gain,
                "gain_mean_se": mean_se(list(gain.values())),
                "validation_accuracy": _by_seed(runs, lambda r: r["validation_accuracy"]),
                "entropy_final": entropy_final,
                "entropy_final_mean_se": mean_se(list(entropy_final.values())),
                "entropy_drop_mean_se": mean_se(list(entropy_drop.values())),
                "frac_reward_zero_std_mean": mean_se([_mean_log(r, "frac_reward_zero_std") for r in runs])[0],
                "distinct_frac": distinct,
                "distinct_frac_mean": mean_se(list(distinct.values()))[0],
                "clean_accuracy_by_slot": [sum(col) / len(col) for col in zip(*slots)],
                "cold_minus_hot_slot": mean_se([s[0] - s[-1] for s in slots]),
                "seconds_mean": mean_se([r["seconds"] for r in runs])[0],
            }
            if all("test_exploit_rate" in r for r in runs):  # the real model's hackable reward: how often it is hacked
                exploit = _by_seed(runs, lambda r: r["test_exploit_rate"])
                arms[arm]["test_exploit_rate"] = exploit
                arms[arm]["exploit_mean_se"] = mean_se(list(exploit.values()))
            if all(r.get("exploit_rate_by_slot") for r in runs):  # the sampled completions, over the whole run
                train = _by_seed(runs, lambda r: sum(r["exploit_rate_by_slot"]) / len(r["exploit_rate_by_slot"]))
                arms[arm]["train_exploit_rate"] = train
                arms[arm]["train_exploit_mean_se"] = mean_se(list(train.values()))
        comparisons = []
        for arm, reference, what in COMPARISONS:
            if arm in arms and reference in arms:
                diff = paired_difference(arms[arm]["test_accuracy"], arms[reference]["test_accuracy"])
                entropy = paired_difference(arms[arm]["entropy_final"], arms[reference]["entropy_final"])
                comparisons.append(
                    {
                        "arm": arm,
                        "reference": reference,
                        "what": what,
                        "test_accuracy": diff,
                        "verdict": verdict(arm, reference, diff),
                        "entropy_final": entropy,
                        "entropy_verdict": verdict(arm, reference, entropy, unit=1.0, what="nats", digits=3)
                        .replace("beats", "is above")
                        .replace("trails", "is below"),
                    }
                )
                distinct = [arms[a]["distinct_frac"] for a in (arm, reference)]
                if all(not math.isnan(v) for d in distinct for v in d.values()):
                    diversity = paired_difference(*distinct)
                    comparisons[-1]["distinct_frac"] = diversity
                    comparisons[-1]["distinct_verdict"] = (
                        verdict(arm, reference, diversity, unit=1.0, what="distinct fraction", digits=3)
                        .replace("beats", "is more varied than")
                        .replace("trails", "is less varied than")
                    )
                # per-seed key -> (comparison key, verdict key): greedy test replies, and every sampled completion
                for per_seed, key, verdict_key in (
                    ("test_exploit_rate", "exploit_rate", "exploit_verdict"),
                    ("train_exploit_rate", "train_exploit_rate", "train_exploit_verdict"),
                ):
                    if per_seed in arms[arm] and per_seed in arms[reference]:
                        exploit = paired_difference(arms[arm][per_seed], arms[reference][per_seed])
                        comparisons[-1][key] = exploit
                        comparisons[-1][verdict_key] = (
                            verdict(arm, reference, exploit)
                            .replace("beats", "exploits more than")
                            .replace("trails", "exploits less than")
                        )
        summary[name] = {
            "condition": cell["condition"],
            "level": cell["level"],
            "arms": arms,
            "comparisons": comparisons,
        }
    finished = {(r["cell"], r["arm"], r["seed"]) for r in results}
    return {
        "cells": summary,
        "missing": [list(key) for key in expected if key not in finished],
        "warm_starts": {str(s): w for s, w in sorted(warm_starts.items())},
    }


def _pm(mean_se_pair, scale=100.0, digits=1) -> str:
    mean, se = mean_se_pair
    if math.isnan(mean):
        return "-"
    return f"{mean * scale:.{digits}f}" + ("" if math.isnan(se) else f" ± {se * scale:.{digits}f}")


def markdown(summary: dict, header: str = "") -> str:
    """The results as markdown: one table per condition, then the paired comparisons and their verdicts."""
    lines = [header] if header else []
    for name, cell in summary["cells"].items():
        lines += [
            f"### {name}",
            "",
            "| arm | seeds | test accuracy % | gain over warm start (points) | entropy at T=1, end (nats) | "
            "entropy drop | frac_reward_zero_std | distinct_frac | clean acc. slot 0 - slot K-1 (points) | s/run |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for arm, a in cell["arms"].items():
            lines.append(
                f"| {arm} | {len(a['seeds'])} | {_pm(a['test_mean_se'])} | {_pm(a['gain_mean_se'])} | "
                f"{_pm(a['entropy_final_mean_se'], 1, 3)} | {_pm(a['entropy_drop_mean_se'], 1, 3)} | "
                f"{a['frac_reward_zero_std_mean']:.2f} | {a['distinct_frac_mean']:.2f} | "
                f"{_pm(a['cold_minus_hot_slot'])} | {a['seconds_mean']:.0f} |"
            )
        exploit = {arm: a["exploit_mean_se"] for arm, a in cell["arms"].items() if "exploit_mean_se" in a}
        if exploit:
            lines += [
                "",
                "Exploit rate % (greedy test replies ending on an operand of the question): "
                + ", ".join(f"{arm} {_pm(v, digits=2)}" for arm, v in exploit.items()),
            ]
        train = {arm: a["train_exploit_mean_se"] for arm, a in cell["arms"].items() if "train_exploit_mean_se" in a}
        if train:
            lines += [
                "",
                "Exploit rate % in training (the sampled completions, every step; how fast the policy is hacked): "
                + ", ".join(f"{arm} {_pm(v, digits=2)}" for arm, v in train.items()),
            ]
        lines += ["", "Paired differences (same seed, same start), test accuracy and final entropy:", ""]
        for c in cell["comparisons"]:
            extra = f"; distinct per group: {c['distinct_verdict']}" if "distinct_verdict" in c else ""
            extra += f"; exploit rate: {c['exploit_verdict']}" if "exploit_verdict" in c else ""
            extra += f"; exploit in training: {c['train_exploit_verdict']}" if "train_exploit_verdict" in c else ""
            lines.append(f"- {c['what']}: {c['verdict']}; entropy: {c['entropy_verdict']}{extra}")
        lines.append("")
    if summary["missing"]:
        lines += [
            f"Missing runs ({len(summary['missing'])}): "
            + ", ".join("/".join(map(str, m)) for m in summary["missing"]),
            "",
        ]
    else:
        lines += ["Every expected run finished.", ""]
    return "\n".join(lines)


def moving_mean(values: list[float], window: int = 10) -> list[float]:
    """The mean of each value and the `window - 1` before it (NaN left out; NaN where all are).

    Example:
    >>> moving_mean([1.0, 3.0, float("nan"), 5.0], window=2)
    [1.0, 2.0, 3.0, 5.0]
    """
    out = []
    for i in range(len(values)):
        chunk = [v for v in values[max(0, i - window + 1) : i + 1] if not math.isnan(v)]
        out.append(sum(chunk) / len(chunk) if chunk else math.nan)
    return out


def mean_curves(runs: list[dict], source: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, mean over seeds of `key` at each step), from the runs' `curve` or `log` entries (`"distinct"`: the
    fraction of distinct completions per batch)."""
    per_step: dict[int, list[float]] = {}
    for r in runs:
        for e in _distinct_log(r) if source == "distinct" else r[source]:
            if key in e and e[key] is not None:
                per_step.setdefault(e["step"], []).append(e[key])
    steps = sorted(per_step)
    return steps, [sum(per_step[s]) / len(per_step[s]) for s in steps]


def plot_cell(name: str, runs_by_arm: dict[str, list[dict]], out: Path) -> Path:
    """One PNG for a condition: accuracy and entropy over training, zero-std fraction, diversity, slots, test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(17, 7))
    panels = [
        (axes[0, 0], "curve", "accuracy", "validation accuracy (greedy)", False),
        (axes[0, 1], "curve", "entropy", "policy entropy at T=1 (validation, nats)", False),
        (axes[0, 2], "log", "frac_reward_zero_std", "frac_reward_zero_std (10-step mean)", True),
        (axes[1, 0], "distinct", "distinct_frac", "distinct completions per group, fraction (10-step mean)", True),
    ]
    colors = {arm: f"C{i}" for i, arm in enumerate(runs_by_arm)}
    for ax, source, key, title, smooth in panels:
        for arm, runs in runs_by_arm.items():
            steps, values = mean_curves(runs, source, key)
            if steps:
                ax.plot(steps, moving_mean(values) if smooth else values, label=arm, color=colors[arm])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("GRPO step")
    ax = axes[0, 3]
    for arm, runs in runs_by_arm.items():
        for key, style in (("ladder/t_min", "-"), ("ladder/t_max", "--")):
            steps, values = mean_curves(runs, "log", key)
            if steps:
                ax.plot(steps, values, style, color=colors[arm], label=arm if style == "-" else None)
    ax.set_title("ladder ends t_min (solid), t_max (dashed)", fontsize=10)
    ax.set_xlabel("GRPO step")
    ax = axes[1, 1]
    for arm, runs in runs_by_arm.items():
        slots = [r["clean_accuracy_by_slot"] for r in runs]
        ax.plot(range(len(slots[0])), [sum(c) / len(c) for c in zip(*slots)], marker="o", label=arm, color=colors[arm])
    ax.set_title("clean accuracy of the samples by slot (rung 0 = coldest)", fontsize=10)
    ax.set_xlabel("slot i in the group")
    ax = axes[1, 2]
    for i, (arm, runs) in enumerate(runs_by_arm.items()):
        values = [100 * r["test_accuracy"] for r in runs]
        mean, se = mean_se(values)
        ax.scatter([i] * len(values), values, color=colors[arm], alpha=0.5, s=15)
        ax.errorbar([i + 0.15], [mean], yerr=[0 if math.isnan(se) else se], fmt="o", color=colors[arm], capsize=4)
    ax.set_xticks(range(len(runs_by_arm)), list(runs_by_arm), rotation=30, fontsize=8)
    ax.set_title("test accuracy % (dots: seeds; bar: mean ± se)", fontsize=10)
    ax = axes[1, 3]
    if any("exploit_rate" in e for runs in runs_by_arm.values() for r in runs for e in r["curve"]):
        for arm, runs in runs_by_arm.items():
            steps, values = mean_curves(runs, "curve", "exploit_rate")
            ax.plot(steps, values, marker="o", label=arm, color=colors[arm])
        ax.set_title("exploit rate (validation, greedy: reply ends on an operand)", fontsize=10)
        ax.set_xlabel("GRPO step")
    else:
        ax.axis("off")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"condition: {name}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=70)
    plt.close(fig)
    from PIL import Image  # matplotlib's own dependency

    with Image.open(out) as image:  # a 64-colour palette: a third of the size, small enough to commit to docs/
        image.convert("RGB").quantize(colors=64).save(out, optimize=True)
    return out


def write_results(
    root: Path, results: list[dict], warm_starts: dict, expected: list, meta: dict, preamble: str = ""
) -> list[Path]:
    """results.json, results.md (`preamble` after the description) and plots/{cell}.png under `root`; returns the
    paths written."""
    summary = summarise(results, warm_starts, expected)
    summary = {**meta, **summary}
    paths = [root / "results.json", root / "results.md"]
    paths[0].write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    header = f"# Experiment results\n\n{meta.get('description', '')}\n" + (f"\n{preamble}" if preamble else "")
    paths[1].write_text(markdown(summary, header), encoding="utf-8")
    by_cell: dict[str, dict[str, list[dict]]] = {}
    for r in sorted(results, key=lambda r: r["seed"]):
        by_cell.setdefault(r["cell"], {}).setdefault(r["arm"], []).append(r)
    for cell, runs_by_arm in by_cell.items():
        paths.append(plot_cell(cell, runs_by_arm, root / "plots" / f"{cell}.png"))
    return paths
