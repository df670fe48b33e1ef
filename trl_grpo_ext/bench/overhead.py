"""Cost of the extension's machinery against plain `trl.GRPOTrainer`: wall time and peak memory of one training run.

    ext: GRPOExtTrainer, temperature_schedule="linear", advantage_estimator="rank",
         reward_funcs=WeightedReward({accuracy, readability, novelty}, weights 0.7 / 0.2 / 0.1)
    trl: trl.GRPOTrainer, reward_funcs=[accuracy, readability, novelty], reward_weights=[0.7, 0.2, 0.1]

Same model, data, seed and number of steps. Both get `generation_kwargs={"min_new_tokens": max_completion_length}`,
so every completion is exactly `max_completion_length` tokens (EOS cannot end a row early, whatever the temperature),
and both compute the same three objectives on completions of the same length: what differs is the extension's
machinery (per-row temperature processor, temperature scoring hook, rank advantages, objective wrappers, metrics).

Each run is a fresh subprocess, so its peak RSS (`ru_maxrss`, read inside the child) is its own; both kinds import
the same modules. Runs go in ABBA order (ext trl, trl ext, ext trl, ...) so slow drift in the load of a shared
machine hits both; each pair gives one ratio ext / trl, and the median ratio is compared with the targets:
time <= 1.03, peak RSS <= 1.02.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from .. import kit

OBJECTIVE_WEIGHTS = {"accuracy": 0.7, "readability": 0.2, "novelty": 0.1}
TIME_TARGET = 1.03
MEMORY_TARGET = 1.02
TRAINERS = ("ext", "trl")

# Sizes of the runs: tiny-kit size, vocabulary override, and the GRPO batch shape. The 50M model takes ~20x the
# small model's time per decoding step on one core, so it runs fewer steps with shorter completions.
_RUNS = {
    "quick": {"size": "small", "vocab_size": None, "steps": 3, "batch_size": 8, "num_generations": 4, "tokens": 16},
    "small": {"size": "small", "vocab_size": None, "steps": 16, "batch_size": 16, "num_generations": 8, "tokens": 32},
    "50m": {"size": "50m", "vocab_size": 32_000, "steps": 3, "batch_size": 16, "num_generations": 8, "tokens": 16},
}
# A `--model` checkpoint (SmolLM2-135M: ~170x the small model's parameters) with LoRA, on chat prompts.
_MODEL_RUN = {"steps": 3, "batch_size": 16, "num_generations": 8, "tokens": 16, "pairs": 3}
_MODEL_RUN_QUICK = {"steps": 2, "batch_size": 16, "num_generations": 8, "tokens": 8, "pairs": 1}
DATASETS = ("arithmetic", "chat_addition")
TOKENIZERS = ("tiny", "model")
_CHILD_TIMEOUT_S = 1800
TABLE_COLUMNS = [
    "model",
    "params",
    "steps",
    "batch",
    "K",
    "tokens",
    "pairs",
    "ext_train_s",
    "trl_train_s",
    "time_ratio",
    "time_pass",
    "ext_rss_mb",
    "trl_rss_mb",
    "rss_ratio",
    "memory_pass",
    "rss_growth_ratio",
    "steady_ratio",
    "generate_ratio",
]


def bench_overhead(
    quick: bool = False, pairs: int | None = None, threads: int | None = 1, model: str | None = None
) -> list[dict]:
    """Median ext / trl ratios of training wall time and peak RSS, one row per model.

    `quick`: the tiny kit's "small" model only, 3 short steps, 2 pairs; otherwise the "small" model (16 steps) and a
    ~50M-parameter Qwen2 with a 32k vocabulary (3 steps of 16-token completions), 5 pairs each. `pairs` overrides
    the number of pairs; `threads` is each child's `torch.set_num_threads` (None: torch's default). One thread is the
    default because intra-op threads spinning against other jobs on a shared CPU make small matmuls erratic.

    `model` (a kit name such as `"smollm2:135m-instruct"`, or a checkpoint directory) replaces the tiny models with
    one row for that checkpoint: LoRA r 16 on all linear layers, its own tokenizer, chat prompts
    (`chat_addition_dataset`), 3 steps of batch 16 (K 8) with 16-token completions, 3 pairs (`quick`: 2 steps of
    8 tokens, 1 pair).

    Returns rows `{"bench": "overhead", "model", "pairs", "time_ratio", "time_ratios", "rss_ratio", "rss_ratios",
    "time_pass", "memory_pass", ...}`, with each child's raw measurements under `"runs"`.
    """
    if pairs is not None and pairs < 1:
        raise ValueError(f"`pairs` should be >= 1, got {pairs}.")
    if model is not None:
        return [_bench_checkpoint(model, quick, pairs, threads)]
    names = ["quick"] if quick else ["small", "50m"]
    pairs = pairs if pairs is not None else (2 if quick else 5)
    return [_bench_model(name, pairs, threads) for name in names]


def _bench_model(name: str, pairs: int, threads: int | None) -> dict:
    run = _RUNS[name]
    spec = {
        "model": {"tiny": run["size"], "vocab_size": run["vocab_size"], "seed": 0},
        "steps": run["steps"],
        "batch_size": run["batch_size"],
        "num_generations": run["num_generations"],
        "completion_tokens": run["tokens"],
        "num_prompts": 64,
        "seed": 0,
        "threads": threads,
        "bf16": False,  # CPU: fp32 weights, no autocast
        "gradient_checkpointing": False,
        "peft": None,
    }
    runs = _run_pairs(spec, pairs)
    return summarize_pairs(
        {
            "bench": "overhead",
            "model": f"tiny-{run['size']}" + (f"-v{run['vocab_size'] // 1000}k" if run["vocab_size"] else ""),
            "params": runs[0]["params"],
            "steps": spec["steps"],
            "batch": spec["batch_size"],
            "K": spec["num_generations"],
            "tokens": spec["completion_tokens"],
            "threads": threads,
        },
        runs,
    )


def _bench_checkpoint(model: str, quick: bool, pairs: int | None, threads: int | None) -> dict:
    run = _MODEL_RUN_QUICK if quick else _MODEL_RUN
    path = kit.resolve_model_path(model)  # a kit name is converted once, here, not in each child
    spec = {
        "model": {"path": path},
        "tokenizer": "model",
        "data": "chat_addition",
        "steps": run["steps"],
        "batch_size": run["batch_size"],
        "num_generations": run["num_generations"],
        "completion_tokens": run["tokens"],
        "num_prompts": 64,
        "seed": 0,
        "threads": threads,
        "bf16": False,  # CPU: fp32 weights, no autocast
        "gradient_checkpointing": False,
        "peft": "lora",
    }
    runs = _run_pairs(spec, pairs if pairs is not None else run["pairs"])
    return summarize_pairs(
        {
            "bench": "overhead",
            "model": f"{model_label(model)}-lora",
            "model_path": path,
            "params": runs[0]["params"],
            "trainable_params": runs[0]["trainable_params"],
            "steps": spec["steps"],
            "batch": spec["batch_size"],
            "K": spec["num_generations"],
            "tokens": spec["completion_tokens"],
            "threads": threads,
        },
        runs,
    )


def model_label(model: str) -> str:
    """A row name for a `--model` argument: `"smollm2:135m-instruct"` -> `"smollm2-135m-instruct"`, a path's last part.

    Example:
    ```python
    >>> model_label("smollm2:135m-instruct"), model_label("/ckpt/my-model/")
    ('smollm2-135m-instruct', 'my-model')

    ```
    """
    return model.replace(":", "-") if kit.is_kit_name(model) else os.path.basename(os.path.normpath(model))


def _run_pairs(spec: dict, pairs: int) -> list[dict]:
    """`pairs` ext/trl child runs of `spec` in ABBA order, each tagged with its pair and trainer."""
    runs: list[dict] = []
    for pair in range(pairs):
        order = TRAINERS if pair % 2 == 0 else TRAINERS[::-1]
        results = {trainer: run_child({**spec, "trainer": trainer}) for trainer in order}
        for trainer in TRAINERS:
            runs.append({"pair": pair, "trainer": trainer, **results[trainer]})
    return runs


def summarize_pairs(row: dict, runs: list[dict]) -> dict:
    """Add the per-pair and median ext / trl ratios of `train_s` and `peak_rss_mb` (and pass/fail) to `row`.

    Also, for context: the ratio of peak RSS above the imports (`rss_growth_ratio`), of the steps after the first
    (`steady_ratio`) and of the time inside generation (`generate_ratio`); the targets apply to `train_s` and
    `peak_rss_mb`.
    """
    by_pair: dict[int, dict[str, dict]] = {}
    for run in runs:
        by_pair.setdefault(run["pair"], {})[run["trainer"]] = run
    pairs = [by_pair[p] for p in sorted(by_pair)]
    time_ratios = [p["ext"]["train_s"] / p["trl"]["train_s"] for p in pairs]
    rss_ratios = [p["ext"]["peak_rss_mb"] / p["trl"]["peak_rss_mb"] for p in pairs]
    # RSS above what the imports alone took: the part a model or trainer can change.
    growth_ratios = [
        (p["ext"]["peak_rss_mb"] - p["ext"]["import_rss_mb"]) / (p["trl"]["peak_rss_mb"] - p["trl"]["import_rss_mb"])
        for p in pairs
    ]
    time_ratio, rss_ratio = statistics.median(time_ratios), statistics.median(rss_ratios)
    # Steps after the first: the first step also pays one-time warm-up (lazy initialisation, first allocations).
    steady_ratios = [
        sum(p["ext"]["step_s"][1:]) / sum(p["trl"]["step_s"][1:])
        for p in pairs
        if len(p["ext"].get("step_s", [])) > 1 and len(p["trl"].get("step_s", [])) > 1
    ]
    generate_ratios = [p["ext"]["generate_s"] / p["trl"]["generate_s"] for p in pairs if "generate_s" in p["ext"]]
    row.update(
        {
            "pairs": len(pairs),
            "ext_train_s": statistics.median(p["ext"]["train_s"] for p in pairs),
            "trl_train_s": statistics.median(p["trl"]["train_s"] for p in pairs),
            "time_ratio": time_ratio,
            "time_target": TIME_TARGET,
            "time_pass": time_ratio <= TIME_TARGET,
            "ext_rss_mb": statistics.median(p["ext"]["peak_rss_mb"] for p in pairs),
            "trl_rss_mb": statistics.median(p["trl"]["peak_rss_mb"] for p in pairs),
            "rss_ratio": rss_ratio,
            "memory_target": MEMORY_TARGET,
            "memory_pass": rss_ratio <= MEMORY_TARGET,
            "rss_growth_ratio": statistics.median(growth_ratios),
            "steady_ratio": statistics.median(steady_ratios) if steady_ratios else None,
            "generate_ratio": statistics.median(generate_ratios) if generate_ratios else None,
            "time_ratios": time_ratios,
            "steady_ratios": steady_ratios,
            "generate_ratios": generate_ratios,
            "rss_ratios": rss_ratios,
            "rss_growth_ratios": growth_ratios,
            "runs": runs,
        }
    )
    return row


# ------------------------------------------------------------------------------------------------------ child runs
def run_child(spec: dict, timeout: float = _CHILD_TIMEOUT_S, entry: str = __name__) -> dict:
    """Run `entry`'s `child_main` (by default this module's `train_once(spec)`) in a fresh Python process and return
    its measurements."""
    with tempfile.TemporaryDirectory(prefix="trl-grpo-ext-bench-") as tmp:
        spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "result.json")
        with open(spec_path, "w") as f:
            json.dump({**spec, "output_dir": os.path.join(tmp, "run")}, f)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
            "WANDB_DISABLED": "true",
        }
        if spec.get("threads"):
            env["OMP_NUM_THREADS"] = str(spec["threads"])
        code = f"import sys; from {entry} import child_main; sys.exit(child_main(sys.argv[1:]))"
        proc = subprocess.run(
            [sys.executable, "-c", code, spec_path, out_path],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0 or not os.path.exists(out_path):
            raise RuntimeError(
                f"benchmark child failed (exit status {proc.returncode}) for {spec['trainer']} "
                f"{spec['model']}:\n{proc.stderr[-4000:]}"
            )
        with open(out_path) as f:
            return json.load(f)


def child_main(argv: list[str]) -> int:
    """The child process of `run_child`: `train_once` of the JSON spec at `argv[0]`, its result written to `argv[1]`."""
    spec_path, out_path = argv
    with open(spec_path) as f:
        spec = json.load(f)
    result = train_once(spec)
    with open(out_path, "w") as f:
        json.dump(result, f)
    return 0


def max_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def train_once(spec: dict) -> dict[str, Any]:
    """Build one trainer from `spec` and train it; returns times, token counts and peak memory. Runs in the child.

    `spec`: `trainer` ("ext" or "trl"); `model`: `{"tiny": size, "vocab_size", "seed"}` (built in memory) or
    `{"path": dir}` (loaded by the trainer, like a Hub model); `tokenizer`: "tiny" (default: the tiny kit's, for
    checkpoints saved without one) or "model" (a `path` model's own, loaded by the trainer); `data`: "arithmetic"
    (default: `arithmetic_dataset`) or "chat_addition" (`chat_addition_dataset`, conversational prompts for a chat
    model); `peft`: None, "lora" or "qlora"; `steps`, `batch_size`, `num_generations`, `completion_tokens`,
    `num_prompts`, `seed`, `threads`, `bf16`, `gradient_checkpointing`, `output_dir`.
    """
    tokenizer_kind, data = spec.get("tokenizer", "tiny"), spec.get("data", "arithmetic")
    if tokenizer_kind not in TOKENIZERS:
        raise ValueError(f"`tokenizer` should be one of {list(TOKENIZERS)}, got {tokenizer_kind!r}.")
    if tokenizer_kind == "model" and "path" not in spec["model"]:
        raise ValueError(f"`tokenizer` 'model' needs a `path` model, got {spec['model']!r}.")
    if data not in DATASETS:
        raise ValueError(f"`data` should be one of {list(DATASETS)}, got {data!r}.")
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    from transformers import BitsAndBytesConfig, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from trl_grpo_ext import GRPOExtConfig, GRPOExtTrainer, WeightedReward
    from trl_grpo_ext.kit.tasks import arithmetic_dataset, chat_addition_dataset
    from trl_grpo_ext.kit.tiny import build_tiny_model, build_tiny_tokenizer
    from trl_grpo_ext.rewards import accuracy, novelty, readability

    cuda = torch.cuda.is_available()
    import_rss_mb = max_rss_mb()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    tokenizer = build_tiny_tokenizer() if tokenizer_kind == "tiny" else None  # None: the trainer loads the model's
    make_dataset = chat_addition_dataset if data == "chat_addition" else arithmetic_dataset
    dataset = make_dataset(spec["num_prompts"], seed=spec["seed"])
    tokens, k = spec["completion_tokens"], spec["num_generations"]
    kwargs: dict[str, Any] = dict(
        output_dir=spec["output_dir"],
        per_device_train_batch_size=spec["batch_size"],
        num_generations=k,
        max_completion_length=tokens,
        generation_kwargs={"min_new_tokens": tokens},
        max_steps=spec["steps"],
        learning_rate=1e-5,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=spec["seed"],
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=not cuda,
        bf16=spec["bf16"],
        gradient_checkpointing=spec["gradient_checkpointing"],
    )
    trainer_kwargs: dict[str, Any] = {"train_dataset": dataset}
    if tokenizer is not None:
        trainer_kwargs["processing_class"] = tokenizer
    model_spec = spec["model"]
    if "path" in model_spec:
        model = model_spec["path"]
        kwargs["model_init_kwargs"] = {"dtype": "bfloat16" if spec["bf16"] else "float32"}
    else:
        model = build_tiny_model(
            tokenizer, size=model_spec["tiny"], seed=model_spec["seed"], vocab_size=model_spec["vocab_size"]
        )
    if spec.get("peft"):
        from peft import LoraConfig

        trainer_kwargs["peft_config"] = LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    if spec.get("peft") == "qlora":
        trainer_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )

    objectives = {"accuracy": accuracy, "readability": readability, "novelty": novelty}
    if spec["trainer"] == "ext":
        args = GRPOExtConfig(**kwargs, temperature_schedule="linear", advantage_estimator="rank")
        reward_funcs: Any = WeightedReward(objectives, OBJECTIVE_WEIGHTS)
        trainer_cls: Any = GRPOExtTrainer
    else:
        args = GRPOConfig(**kwargs, reward_weights=[OBJECTIVE_WEIGHTS[name] for name in objectives])
        # Plain TRL does not pass the group size to reward functions: bind it, as novelty's docstring says.
        reward_funcs = [accuracy, readability, functools.partial(novelty, num_generations=k)]
        trainer_cls = GRPOTrainer

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer = trainer_cls(model=model, reward_funcs=reward_funcs, args=args, **trainer_kwargs)
    init_s = time.perf_counter() - start

    generation = {"seconds": 0.0, "tokens": 0, "rows": 0}
    generate_single_turn = trainer._generate_single_turn

    @functools.wraps(generate_single_turn)
    def timed_generate(*a, **kw):
        begin = time.perf_counter()
        completion_ids, logprobs = generate_single_turn(*a, **kw)
        generation["seconds"] += time.perf_counter() - begin
        generation["tokens"] += sum(len(ids) for ids in completion_ids)
        generation["rows"] += len(completion_ids)
        return completion_ids, logprobs

    trainer._generate_single_turn = timed_generate  # outermost, so the ext's ladder set-up is timed too

    step_times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            self.begin = time.perf_counter()

        def on_step_end(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            step_times.append(time.perf_counter() - self.begin)

    trainer.add_callback(StepTimer())
    start = time.perf_counter()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    train_s = time.perf_counter() - start

    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    return {
        "trainer": spec["trainer"],
        # What was really trained, so the JSON shows that both runs computed the same objectives.
        "reward_funcs": list(trainer.reward_func_names),
        "reward_weights": trainer.reward_weights.tolist(),
        "temperature_schedule": getattr(args, "temperature_schedule", "constant"),
        "advantage_estimator": getattr(args, "advantage_estimator", "zscore"),
        "ladder_logged": any("ladder/t_min" in entry for entry in trainer.state.log_history),
        "params": sum(p.numel() for p in unwrapped.parameters()),
        "trainable_params": sum(p.numel() for p in unwrapped.parameters() if p.requires_grad),
        "init_s": init_s,
        "train_s": train_s,
        "step_s": step_times,
        "generate_s": generation["seconds"],
        "generated_tokens": generation["tokens"],
        "generated_rows": generation["rows"],
        "import_rss_mb": import_rss_mb,
        "peak_rss_mb": max_rss_mb(),
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "threads": torch.get_num_threads(),
        # 1-minute load average of the machine before and after: other jobs on a shared CPU show up here.
        "load_before": load_before,
        "load_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
    }
