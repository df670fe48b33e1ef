"""`trl-grpo-ext report RUN_DIR [--out DIR]`: plots and a markdown summary of a finished (or running) training run.

Reads the `log_history` of the run's `trainer_state.json` (in RUN_DIR, else in its newest `checkpoint-*/`) and writes
one PNG per panel, skipping the panels whose metrics the run did not log:

| file                    | metrics                                                                     |
|-------------------------|-----------------------------------------------------------------------------|
| `rewards.png`           | `reward` (band: `reward_std`) and each objective's `rewards/{name}/mean`    |
| `ladder.png`            | `ladder/reward_rung_{i}` over steps, and their mean per rung                |
| `ladder_control.png`    | `ladder/t_min`, `ladder/t_max` against `ladder/zero_std_frac` and its target (closed-loop runs) |
| `advantages.png`        | `advantages/mean`, `advantages/std`, `advantages/abs_max`                   |
| `completion_length.png` | `completions/mean_length` (band: min to max), `completions/clipped_ratio`   |
| `diversity.png`         | `ladder/distinct_frac`, `frac_reward_zero_std`                              |
| `loss.png`              | `loss`, `kl`, `entropy` (also SFT runs' `loss`, `mean_token_accuracy`)      |
| `efficiency.png`        | `efficiency/skipped_rows_frac`, `efficiency/prompt_tokens_saved_frac` (`skip_zero_advantage`, `share_prompt`) |
| `tied_groups.png`       | `frac_reward_zero_std` split: `tied_groups/top_frac` (too easy), `tied_groups/bottom_frac` (too hard) (`log_tied_groups`, `dynamic_sampling`) |
| `dynamic_sampling.png`  | `dynamic_sampling/rounds`, `dynamic_sampling/groups_per_kept`; `dynamic_sampling/teaching_frac` (`dynamic_sampling`) |
| `online_rm.png`         | per online reward model `{name}`: `{name}/loss`; `{name}/pair_accuracy`, `{name}/gold_agreement`; `{name}/labels_used`, `{name}/budget_left`, `{name}/label_errors` |

plus `report.md`: the first and last value of every plotted metric and links to the images. Works for any TRL or
trl-grpo-ext run; nothing but the JSON file is read.

Example:
    >>> paths = write_report("runs/demo/grpo")  # doctest: +SKIP
    >>> [p.name for p in paths]  # doctest: +SKIP
    ['rewards.png', 'ladder.png', 'advantages.png', 'completion_length.png', 'diversity.png', 'loss.png', 'report.md']
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

TRAINER_STATE = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_RUNG = re.compile(r"^ladder/reward_rung_(\d+)$")
_OBJECTIVE = re.compile(r"^rewards/(.+)/mean$")
_ONLINE_RM = re.compile(r"^([^/]+)/labels_used$")  # every reward call of an online reward model logs it
_ONLINE_RM_KEYS = ("loss", "pair_accuracy", "gold_agreement", "labels_used", "budget_left", "label_errors")
_DPI = 100


@dataclass
class _Series:
    """One metric over training steps."""

    key: str
    steps: list[float]
    values: list[float]

    @property
    def first(self) -> float:
        return self.values[0]

    @property
    def last(self) -> float:
        return self.values[-1]


def find_trainer_state(run_dir: str | Path) -> Path:
    """
    The `trainer_state.json` of a run: `run_dir` itself if it is the file, else `run_dir/trainer_state.json`, else the
    one in the newest (highest step) `run_dir/checkpoint-*/`.

    Raises `FileNotFoundError` naming what was looked for when there is none.
    """
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    if not run_dir.is_dir():
        raise FileNotFoundError(f"Run directory {str(run_dir)!r} does not exist.")
    direct = run_dir / TRAINER_STATE
    if direct.is_file():
        return direct
    checkpoints = sorted(
        (int(match.group(1)), path)
        for path in run_dir.iterdir()
        if (match := _CHECKPOINT.match(path.name)) and (path / TRAINER_STATE).is_file()
    )
    if not checkpoints:
        raise FileNotFoundError(
            f"No {TRAINER_STATE} in {str(run_dir)!r} nor in a checkpoint-*/ below it. A Trainer writes it with each "
            "checkpoint, or call `trainer.save_state()` after training."
        )
    return checkpoints[-1][1] / TRAINER_STATE


def load_log_history(run_dir: str | Path) -> list[dict]:
    """The `log_history` list of the run's `trainer_state.json` (see `find_trainer_state`)."""
    path = find_trainer_state(run_dir)
    with open(path, encoding="utf-8") as handle:
        state = json.load(handle)
    history = state.get("log_history")
    if not isinstance(history, list):
        raise ValueError(f"{str(path)!r} has no `log_history` list.")
    return history


def _series(history: list[dict]) -> dict[str, _Series]:
    """Every numeric metric of the training logs (eval logs and the final train summary left out), by key."""
    out: dict[str, _Series] = {}
    for index, entry in enumerate(history):
        if "train_runtime" in entry:  # the end-of-training summary, not a step's metrics
            continue
        step = entry.get("step", index)
        for key, value in entry.items():
            if key in ("step", "epoch") or key.startswith("eval_"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            series = out.setdefault(key, _Series(key, [], []))
            series.steps.append(step)
            series.values.append(float(value))
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, ax_list, path: Path, outside_legend: bool = False) -> Path:
    for ax in ax_list:
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0] and ax.get_legend() is None:
            if outside_legend:
                ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
            else:
                ax.legend(fontsize=8, loc="best", framealpha=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _plot_rewards(series: dict[str, _Series], out: Path) -> Path | None:
    objectives = sorted(key for key in series if _OBJECTIVE.match(key))
    if "reward" not in series and not objectives:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    if "reward" in series:
        reward = series["reward"]
        ax.plot(reward.steps, reward.values, color="black", linewidth=2, label="reward (weighted sum)")
        std = series.get("reward_std")
        if std is not None and std.steps == reward.steps:
            low = [m - s for m, s in zip(reward.values, std.values)]
            high = [m + s for m, s in zip(reward.values, std.values)]
            ax.fill_between(reward.steps, low, high, color="black", alpha=0.07, label="reward ± std over completions")
    for key in objectives:
        s = series[key]
        ax.plot(s.steps, s.values, linewidth=1.3, label=f"objective {_OBJECTIVE.match(key).group(1)} (mean)")
    ax.set(title="Reward and objectives", xlabel="training step", ylabel="reward")
    return _finish(fig, [ax], out / "rewards.png", outside_legend=True)


def _plot_ladder(series: dict[str, _Series], out: Path) -> Path | None:
    rungs = sorted((int(m.group(1)), key) for key in series if (m := _RUNG.match(key)))
    if not rungs:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    cmap = plt.get_cmap("plasma")
    colors = [cmap(0.85 * i / max(len(rungs) - 1, 1)) for i in range(len(rungs))]  # no near-white end
    for color, (rung, key) in zip(colors, rungs):
        s = series[key]
        left.plot(s.steps, s.values, color=color, linewidth=1.0, label=f"rung {rung}")
    left.set(title="Reward per temperature rung", xlabel="training step", ylabel="mean reward of the rung")
    means = [sum(series[key].values) / len(series[key].values) for _, key in rungs]
    right.bar([str(rung) for rung, _ in rungs], means, color=colors)
    for x, mean in enumerate(means):
        right.annotate(
            f"{mean:.3f}",
            (x, mean),
            ha="center",
            va="bottom",
            fontsize=7,
            rotation=90,
            xytext=(0, 2),
            textcoords="offset points",
        )
    xlabel = "rung (coldest -> hottest)"
    t_min, t_max = series.get("ladder/t_min"), series.get("ladder/t_max")
    if t_min is not None and t_max is not None:
        xlabel += f"\nT from {t_min.last:.2g} to {t_max.last:.2g} (last step)"
    right.set(title="Mean over the run", xlabel=xlabel, ylabel="mean reward")
    if max(means) > 0:
        right.set_ylim(top=max(means) * 1.18)  # room for the labels
    left.legend(fontsize=7, ncol=2, loc="best", framealpha=0.8)
    right.grid(True, axis="y", alpha=0.3)
    return _finish(fig, [left], out / "ladder.png")


def _plot_ladder_control(series: dict[str, _Series], out: Path) -> Path | None:
    """The closed-loop ladder: its ends (left axis) against the signal that moves them and the target (right)."""
    signal, t_min, t_max = (series.get(k) for k in ("ladder/zero_std_frac", "ladder/t_min", "ladder/t_max"))
    if signal is None or t_min is None or t_max is None:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(t_max.steps, t_max.values, color="tab:red", linewidth=1.8, label="ladder t_max")
    ax.plot(t_min.steps, t_min.values, color="tab:blue", linewidth=1.8, label="ladder t_min")
    if t_min.steps == t_max.steps:
        ax.fill_between(t_min.steps, t_min.values, t_max.values, color="tab:purple", alpha=0.12)
    ax.set(title="Closed-loop ladder", xlabel="training step", ylabel="temperature")
    twin = ax.twinx()
    twin.plot(signal.steps, signal.values, color="black", linewidth=1.0, alpha=0.8, label="zero-std fraction")
    target = series.get("ladder/zero_std_target")
    if target is not None:
        twin.plot(target.steps, target.values, color="black", linestyle="--", linewidth=1.0, label="target")
    twin.set_ylabel("fraction of groups with equal rewards")
    twin.set_ylim(-0.02, 1.02)
    handles, labels = ax.get_legend_handles_labels()
    twin_handles, twin_labels = twin.get_legend_handles_labels()
    ax.legend(handles + twin_handles, labels + twin_labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.1, 1.0))
    return _finish(fig, [ax], out / "ladder_control.png")


def _plot_lines(
    series: dict[str, _Series],
    keys: list[tuple[str, str]],
    title: str,
    ylabel: str,
    path: Path,
    ylim: tuple[float, float] | None = None,
) -> Path | None:
    present = [(key, label) for key, label in keys if key in series]
    if not present:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in present:
        s = series[key]
        ax.plot(s.steps, s.values, linewidth=1.5, label=label)
    ax.set(title=title, xlabel="training step", ylabel=ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    return _finish(fig, [ax], path)


def _plot_lengths(series: dict[str, _Series], out: Path) -> Path | None:
    if "completions/mean_length" not in series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    mean = series["completions/mean_length"]
    ax.plot(mean.steps, mean.values, color="tab:blue", linewidth=2, label="mean length")
    low, high = series.get("completions/min_length"), series.get("completions/max_length")
    if low is not None and high is not None and low.steps == mean.steps == high.steps:
        ax.fill_between(mean.steps, low.values, high.values, color="tab:blue", alpha=0.15, label="min to max")
    ax.set(title="Completion length", xlabel="training step", ylabel="tokens")
    axes = [ax]
    clipped = series.get("completions/clipped_ratio")
    if clipped is not None:
        twin = ax.twinx()
        twin.plot(clipped.steps, clipped.values, color="tab:red", linewidth=1, linestyle="--")
        twin.set_ylabel("fraction truncated at max length (dashed)", color="tab:red")
        twin.set_ylim(0, 1.02)
    return _finish(fig, axes, out / "completion_length.png")


def _plot_losses(series: dict[str, _Series], out: Path) -> Path | None:
    panels = [
        (key, label)
        for key, label in (
            ("loss", "loss"),
            ("kl", "KL to the reference"),
            ("entropy", "entropy (nats/token)"),
            ("mean_token_accuracy", "token accuracy"),
        )
        if key in series
    ]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        s = series[key]
        ax.plot(s.steps, s.values, linewidth=1.5)
        ax.set(title=label, xlabel="training step", ylabel=key)
    return _finish(fig, list(axes[0]), out / "loss.png")


def _plot_tied_groups(series: dict[str, _Series], out: Path) -> Path | None:
    """Where the groups without signal sit: at the batch's highest reward (too easy) or its lowest (too hard)."""
    if "tied_groups/top_frac" not in series:
        return None
    return _plot_lines(
        series,
        [
            ("frac_reward_zero_std", "groups with equal rewards (fraction)"),
            ("tied_groups/top_frac", "... at the batch's highest reward: too easy"),
            ("tied_groups/bottom_frac", "... at the batch's lowest reward: too hard"),
        ],
        "Groups without signal",
        "fraction of groups",
        out / "tied_groups.png",
        ylim=(0.0, 1.02),
    )


def _plot_dynamic_sampling(series: dict[str, _Series], out: Path) -> Path | None:
    """Dynamic sampling's cost (rounds, groups generated per teaching group kept) and what it bought."""
    if "dynamic_sampling/rounds" not in series:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (
        ("dynamic_sampling/rounds", "generation rounds"),
        ("dynamic_sampling/groups_per_kept", "groups generated per teaching group kept"),
    ):
        if key in series:
            left.plot(series[key].steps, series[key].values, linewidth=1.5, label=label)
    left.set(title="Dynamic sampling: cost", xlabel="training step", ylabel="count")
    teaching = series["dynamic_sampling/teaching_frac"]
    right.plot(teaching.steps, teaching.values, linewidth=1.5, label="groups trained on that teach (fraction)")
    right.set(title="Dynamic sampling: the batch", xlabel="training step", ylabel="fraction", ylim=(0.0, 1.02))
    return _finish(fig, [left, right], out / "dynamic_sampling.png")


def _online_rm_names(series: dict[str, _Series]) -> list[str]:
    """The metric prefixes of the run's online reward models (`rm` by default)."""
    return sorted(m.group(1) for key in series if (m := _ONLINE_RM.match(key)) and m.group(1) != "rewards")


def _plot_online_rm(series: dict[str, _Series], out: Path) -> Path | None:
    names = _online_rm_names(series)
    if not names:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(names), 3, figsize=(11.5, 3.5 * len(names)), squeeze=False)
    panels = [
        ([("loss", "Bradley-Terry loss (mean over the update's steps)")], "loss", None),
        (
            [
                ("pair_accuracy", "held-out pair accuracy (after the update)"),
                ("gold_agreement", "agreement with the gold labels (before learning them)"),
            ],
            "fraction",
            (0.0, 1.02),
        ),
        (
            [("labels_used", "labels used"), ("budget_left", "budget left"), ("label_errors", "label errors")],
            "labels",
            None,
        ),
    ]
    titles = ("loss", "accuracy", "labels")
    for name, row in zip(names, axes):
        for ax, (keys, ylabel, ylim), title in zip(row, panels, titles):
            present = [(f"{name}/{key}", label) for key, label in keys if f"{name}/{key}" in series]
            for key, label in present:
                s = series[key]
                ax.plot(
                    s.steps,
                    s.values,
                    linewidth=1.5,
                    marker="o" if len(s.steps) < 20 else None,
                    markersize=3,
                    label=label,
                )
            if not present:
                ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
            ax.set(title=f"online reward model {name!r}: {title}", xlabel="training step", ylabel=ylabel)
            if ylim is not None:
                ax.set_ylim(*ylim)
    return _finish(fig, list(axes.flatten()), out / "online_rm.png")


def _markdown(run_dir: Path, state_path: Path, series: dict[str, _Series], images: list[Path], md_path: Path) -> str:
    plotted = (
        ["reward", "reward_std"]
        + sorted(key for key in series if _OBJECTIVE.match(key))
        + sorted((key for key in series if _RUNG.match(key)), key=lambda k: int(_RUNG.match(k).group(1)))
        + ["advantages/mean", "advantages/std", "advantages/abs_max", "completions/mean_length"]
        + ["ladder/t_min", "ladder/t_max", "ladder/zero_std_frac", "ladder/zero_std_target"]
        + ["completions/clipped_ratio", "ladder/distinct_frac", "frac_reward_zero_std", "loss", "kl", "entropy"]
        + ["mean_token_accuracy", "efficiency/skipped_rows_frac", "efficiency/prompt_tokens_saved_frac"]
        + ["tied_groups/top_frac", "tied_groups/bottom_frac"]
        + ["dynamic_sampling/rounds", "dynamic_sampling/groups_per_kept", "dynamic_sampling/teaching_frac"]
        + [f"{name}/{key}" for name in _online_rm_names(series) for key in _ONLINE_RM_KEYS]
    )
    steps = max((max(s.steps) for s in series.values()), default=0)
    lines = [
        f"# Training report: `{run_dir}`",
        "",
        f"Source: `{state_path}`, {len(next(iter(series.values())).steps) if series else 0} logged steps, "
        f"last logged step {steps:g}.",
        "",
        "| metric | first | last | change |",
        "|---|---:|---:|---:|",
    ]
    for key in plotted:
        if key in series:
            s = series[key]
            lines.append(f"| `{key}` | {s.first:.4g} | {s.last:.4g} | {s.last - s.first:+.4g} |")
    lines += ["", "## Plots", ""]
    for image in images:
        rel = image.relative_to(md_path.parent) if image.parent == md_path.parent else image
        lines += [f"![{image.stem}]({rel.as_posix()})", ""]
    if not images:
        lines += ["(none of the plotted metrics were logged)", ""]
    return "\n".join(lines)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """
    Write the PNGs and `report.md` of a run; returns their paths (PNGs first, `report.md` last).

    Args:
        run_dir (`str` or `Path`):
            A training output directory (or its `trainer_state.json`); see `find_trainer_state`.
        out (`str` or `Path`, *optional*):
            Where to write; defaults to `run_dir/report`.

    Returns:
        `list[Path]`: the files written.
    """
    run_dir = Path(run_dir)
    state_path = find_trainer_state(run_dir)
    series = _series(load_log_history(run_dir))
    base = run_dir if run_dir.is_dir() else run_dir.parent
    out = Path(out) if out is not None else base / "report"
    out.mkdir(parents=True, exist_ok=True)
    images = [
        _plot_rewards(series, out),
        _plot_ladder(series, out),
        _plot_ladder_control(series, out),
        _plot_lines(
            series,
            [
                ("advantages/mean", "mean"),
                ("advantages/std", "std"),
                ("advantages/abs_max", "max |advantage|"),
            ],
            "Advantages of the trained completions",
            "advantage",
            out / "advantages.png",
        ),
        _plot_lengths(series, out),
        _plot_lines(
            series,
            [
                ("ladder/distinct_frac", "distinct completions per group (fraction)"),
                ("frac_reward_zero_std", "groups with equal rewards: no signal (fraction)"),
            ],
            "Group diversity",
            "fraction",
            out / "diversity.png",
            ylim=(0.0, 1.02),
        ),
        _plot_losses(series, out),
        _plot_lines(
            series,
            [
                ("efficiency/skipped_rows_frac", "loss rows not computed: advantage 0 (fraction)"),
                ("efficiency/prompt_tokens_saved_frac", "prompt positions computed once, not again (fraction)"),
            ],
            "Compute saved with the same math",
            "fraction",
            out / "efficiency.png",
            ylim=(0.0, 1.02),
        ),
        _plot_online_rm(series, out),
        _plot_tied_groups(series, out),
        _plot_dynamic_sampling(series, out),
    ]
    images = [path for path in images if path is not None]
    md_path = out / "report.md"
    md_path.write_text(_markdown(base, state_path, series, images, md_path) + "\n", encoding="utf-8")
    return [*images, md_path]


def main(argv: list[str] | None = None) -> int:
    """`trl-grpo-ext report RUN_DIR [--out DIR]`; prints the paths written, returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="trl-grpo-ext report",
        description="Plot the log_history of a training run (trainer_state.json) and write report.md.",
    )
    parser.add_argument("run_dir", help="training output directory, a checkpoint-*/ or a trainer_state.json")
    parser.add_argument("--out", default=None, help="output directory (default: RUN_DIR/report)")
    args = parser.parse_args(argv)
    try:
        paths = write_report(args.run_dir, args.out)
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
