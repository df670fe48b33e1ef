"""Zero-std fraction and ladder over the demo's GRPO steps: fixed ladder vs closed loop at targets 0.2 and 0.5.

    python docs/scripts/plot_closed_loop_demo.py ROOT docs/img/demo_closed_loop.png

ROOT holds seed{0,1}/ (`trl-grpo-ext demo --closed-loop --closed-loop-target 0.2 --seed N --output-dir ROOT/seedN`)
and seed{0,1}-t0.5/ (`python docs/scripts/closed_loop_arm.py ROOT/seedN/sft ROOT/seedN-t0.5 0.5 N`).
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from trl_grpo_ext.report import load_log_history  # noqa: E402

root, out = sys.argv[1], sys.argv[2]
arms = [
    ("fixed ladder 0.7-1.0", "seed{s}/grpo", "tab:gray"),
    ("closed loop, target 0.2", "seed{s}/grpo-closed-loop", "tab:red"),
    ("closed loop, target 0.5", "seed{s}-t0.5", "tab:blue"),
]
fig, axes = plt.subplots(2, 2, figsize=(12, 6.5), sharex=True, sharey="row")
for col, seed in enumerate((0, 1)):
    top, bottom = axes[0][col], axes[1][col]
    for name, path, color in arms:
        logs = [e for e in load_log_history(f"{root}/{path.format(s=seed)}") if "frac_reward_zero_std" in e]
        steps = [e["step"] for e in logs]
        top.plot(steps, [e["frac_reward_zero_std"] for e in logs], color=color, label=name)
        bottom.fill_between(
            steps,
            [e["ladder/t_min"] for e in logs],
            [e["ladder/t_max"] for e in logs],
            color=color,
            alpha=0.3,
            label=name,
        )
    top.set(title=f"seed {seed}", ylabel="fraction of groups with equal rewards" if col == 0 else None, ylim=(0, 1))
    bottom.set(xlabel="GRPO step", ylabel="ladder [t_min, t_max]" if col == 0 else None)
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
axes[0][0].legend(fontsize=8, loc="upper left")
fig.suptitle("trl-grpo-ext demo (digit reversal, 250 GRPO steps): zero-std fraction and ladder")
fig.tight_layout()
fig.savefig(out, dpi=100)
