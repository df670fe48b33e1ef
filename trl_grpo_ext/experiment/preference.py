r"""`trl-grpo-ext preference-experiment`: does learning the reward model online stop GRPO from over-optimising it?

    trl-grpo-ext preference-experiment [--output-dir DIR] [--quick] [--seeds 0 1 2 3 4] [--steps N]
                                       [--conditions plain spurious] [--arms gold frozen ...] [--seed-set-size N]
                                       [--select [SIZE ...]] [--validate TAG] [--grpo-learning-rate LR]
                                       [--rm-learning-rate LR] [--update-steps N] [--report-only]

(also `python -m trl_grpo_ext.experiment.preference ...`.)

The demo's digit-reversal task on the tiny kit. The **gold** reward is the exact answer (1 or 0). The **proxy** is a
Bradley-Terry reward model (`Qwen2ForSequenceClassification`, the policy's size, its backbone initialised from the
warm-start policy, as reward models are from the SFT model) trained on a small *seed set* of gold-labelled pairs of
completions sampled (T = 1) from the warm-start policy. Two conditions of the seed set:

- `plain`: decided pairs (one completion right, the other wrong) drawn at random;
- `spurious`: decided pairs in which the right completion is also the *longer* one, so "longer wins" explains the
  whole seed set; once the policy writes longer completions than the answer has digits, it stops holding.

Arms, every one from the seed's SFT warm start (the runner's, cached), the same data, steps, batch and learning rate
(TRL's defaults otherwise: T = 1, z-score advantages):

| arm | the reward GRPO trains on |
|---|---|
| `gold` | the exact answer (the upper bound; shared by both conditions) |
| `frozen` | the proxy trained on the seed set, frozen |
| `frozen_matched` | a proxy trained on the seed set plus as many extra labels as the online arms spend, all from the warm-start policy (random within-group pairs, ties included, as `online_random` picks them), frozen: separates "online" from "more labels" |
| `online_random` | the `frozen` proxy, then `OnlineRewardModel` learning during GRPO from gold labels of random within-group pairs of the policy's own completions |
| `online_top` | the same, but the pair is each chosen group's highest-proxy completion against a random other of its group (`select_top`): labels go where the policy is being pushed, which is where an exploited proxy is wrong |
| `online_uncertain` | the same with the `uncertain` selector (Bradley-Terry probability closest to 0.5); not in the default grid |

The online arms label `pairs_per_update` = floor(`label_fraction` x completions per step) pairs per step, so at most
`label_fraction` of the scored completions' count in labels; their replay buffer starts with the seed set.

Measured per run: greedy gold accuracy on the *validation* split every `eval_every` steps (the over-optimisation
curve), the proxy's mean reward and the gold accuracy of the sampled training completions at every step, the test
accuracy once at the end, the final reward model's pair accuracy on *fresh on-policy pairs* (decided pairs among K
completions sampled at T = 1 from the final policy on validation prompts), labels used, wall time, and whether the
reward model's weights moved. `frozen` counts as *exploited* in a seed when its proxy reward rose (mean of the last
10 steps above the first 10) while its validation gold accuracy ended at least 5 points below its own peak.

`--select` chooses the seed-set size on the validation split, from its own warm start (`select_seed`, not a grid
seed): `frozen` at each candidate size under both conditions; the largest size at which `frozen` is exploited in
both conditions is kept (the most labels that still leave something to fix), written to DIR/selection.json, which
later grid runs read. `--validate TAG` trains `--arms` on the selection seed (validation split only) in
DIR/select/size{N}-TAG, to tune the other settings on; DIR/selection.md lists every validation run with the settings
it differs in.

Layout of DIR: `warmstart/seed{s}/` (runner's SFT warm start), `proxy/seed{s}/` (warm-start samples, seed sets,
the trained proxies), `runs/{condition}/{arm}/seed{s}/result.json` (gold: `runs/shared/gold/...`), `select/...`,
`results.json`, `results.md`, `plots/{condition}.png`. Finished runs are skipped; a run or a cached warm start or proxy
made with other settings is refused (`SettingsMismatch`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..demos.common import demo_environment, greedy_accuracy
from ..demos.tiny import DemoSettings
from .results import mean_curves, moving_mean
from .runner import (
    ExperimentSettings,
    RunSpec,
    SettingsMismatch,
    check_warm_start,
    run_finished,
    setting_differences,
    settings_fingerprint,
    tiny_datasets,
    tiny_grpo_trainer,
    warm_start_dir,
    warm_start_job,
    warm_start_settings,
    write_json,
)
from .stats import mean_se, paired_difference, verdict

DEFAULT_OUTPUT_DIR = "runs/preference"
CONDITIONS = ("plain", "spurious")
SHARED = "shared"  # the `gold` arm's condition: it trains on no proxy, so both conditions share its runs
EXPLOIT_DROP = 0.05  # frozen is exploited when validation gold accuracy ends this far below its own peak ...
PROXY_WINDOW = 10  # ... while the proxy's mean reward over the last this many steps is above the first ones'

ARMS: dict[str, dict] = {
    "gold": {"reward": "gold"},
    "frozen": {"reward": "proxy", "rm": "seed"},
    "frozen_matched": {"reward": "proxy", "rm": "matched"},
    "online_random": {"reward": "proxy", "rm": "seed", "selector": "random"},
    "online_top": {"reward": "proxy", "rm": "seed", "selector": "top"},
    "online_uncertain": {"reward": "proxy", "rm": "seed", "selector": "uncertain"},
}
DEFAULT_ARMS = ("gold", "frozen", "frozen_matched", "online_random", "online_top")
ONLINE_ARMS = ("online_random", "online_top", "online_uncertain")


@dataclass(frozen=True)
class PreferenceSettings:
    """Sizes of the over-optimisation experiment (the warm start and GRPO hyper-parameters are the demo's)."""

    # The demo's warm start; 8 prompts x 8 completions per step and a 4x lower learning rate than the demo's 2e-4
    # (chosen on validation: at 2e-4 the policy left the warm start's accuracy within 10 steps under any learnt
    # proxy, faster than 3 labels a step can correct; gold reached the same validation accuracy at 5e-5).
    demo: DemoSettings = field(default_factory=lambda: DemoSettings(grpo_batch_size=64, grpo_learning_rate=5e-5))
    grpo_steps: int = 60
    eval_every: int = 10
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    select_seed: int = 100
    seed_set_size: int = 128  # gold-labelled warm-start pairs the proxy learns before GRPO (chosen with --select)
    # Train prompts whose K warm-start samples give the seed set, sampled `seed_prompts` at a time until the spurious
    # condition has its pairs (the right completion longer than the wrong one), which are rare: warm-start errors are
    # mostly of the right length (76 such pairs in 1,024 prompts at seed 0, 159 at seed 100), at most
    # `max_seed_prompts`.
    seed_prompts: int = 1024
    max_seed_prompts: int = 3072
    extra_prompts: int = 64  # further train prompts, whose samples give frozen_matched's extra labels
    rm_learning_rate: float = 1e-4  # the proxy's AdamW, before and during GRPO (1e-3 overfitted the seed set)
    rm_epochs: int = 10  # passes over the seed set
    rm_batch_size: int = 16
    label_fraction: float = 0.05  # online labels per step = floor(this x completions per step)
    replay_pairs: int = 8
    update_steps: int = 4
    fresh_prompts: int = 48  # validation prompts x K samples for the on-policy pair accuracy

    @property
    def pairs_per_update(self) -> int:
        return max(1, math.floor(self.label_fraction * self.demo.grpo_batch_size))

    @property
    def label_budget(self) -> int:
        return self.pairs_per_update * self.grpo_steps

    def experiment(self) -> ExperimentSettings:
        """The runner's settings for the warm start (the same warm start as `trl-grpo-ext experiment`'s)."""
        return ExperimentSettings(
            demo=self.demo,
            grpo_steps=self.grpo_steps,
            eval_every=self.eval_every,
            seeds=self.seeds,
            select_seed=self.select_seed,
        )


FULL_SETTINGS = PreferenceSettings()
QUICK_SETTINGS = PreferenceSettings(
    demo=DemoSettings(
        num_train=128,
        num_validation=32,
        num_heldout=48,
        min_length=2,  # short strings: a 40-step warm start gets some right, so there are decided pairs
        max_length=4,
        sft_max_steps=40,
        sft_target_accuracy=1.01,  # never reached: a fixed 40-step warm start
        sft_check_every=40,
        sft_batch_size=32,
        grpo_batch_size=32,
    ),
    grpo_steps=3,
    eval_every=1,
    seeds=(0,),
    seed_set_size=4,
    seed_prompts=96,
    max_seed_prompts=96,
    extra_prompts=16,
    rm_epochs=2,
    fresh_prompts=4,
)


# ---------------------------------------------------------------------------------------------------- pure parts
def gold_reward(prompts=None, completions=None, answer=None, **kwargs) -> list[float]:
    """The gold reward: 1.0 when the completion is exactly the answer (`tasks.is_correct`), else 0.0.

    Example:
    >>> gold_reward(["rev 123="] * 3, ["321", "3210", " 321"], answer=["321"] * 3)
    [1.0, 0.0, 1.0]
    """
    from ..kit.tasks import is_correct

    return [float(is_correct(c, a)) for c, a in zip(completions, answer)]


def select_top(num_generations: int):
    """A selector for `OnlineRewardModel`: in `k` random groups, the group's highest-scored completion against a
    random other completion of its group (more pairs per group once every group has one).

    Example:
    >>> import random
    >>> from trl_grpo_ext.rewards.online import group_pairs
    >>> select = select_top(3)
    >>> select(group_pairs(6, 3), 2, [0.1, 0.9, 0.2, 0.5, 0.0, 0.3], random.Random(0))
    [(1, 2), (3, 5)]
    """

    def select(pairs, k, scores, rng):
        by_group: dict[int, list[tuple]] = {}
        for pair in pairs:
            by_group.setdefault(pair[0] // num_generations, []).append(pair)
        queues = []
        for group in sorted(by_group):
            members = sorted({i for pair in by_group[group] for i in pair})
            top = max(members, key=lambda i: scores[i])
            with_top = [pair for pair in by_group[group] if top in pair]
            rng.shuffle(with_top)
            queues.append(with_top)
        rng.shuffle(queues)
        chosen: list[tuple] = []
        while len(chosen) < k and any(queues):
            for queue in queues:
                if queue and len(chosen) < k:
                    chosen.append(queue.pop())
        return sorted(chosen)

    select.__name__ = "select_top"
    return select


def decided_pairs(prompt: str, completions: list[str], gold: list[float], answer: str) -> list[dict]:
    """Within-group pairs whose gold differs, as `{prompt, chosen, rejected, answer}` (identical texts left out).

    Example:
    >>> decided_pairs("rev 12=", ["21", "2", "21", "x"], [1.0, 0.0, 1.0, 0.0], "21")[:2]
    [{'prompt': 'rev 12=', 'chosen': '21', 'rejected': '2', 'answer': '21'}, {'prompt': 'rev 12=', 'chosen': '21', 'rejected': 'x', 'answer': '21'}]
    """
    out, seen = [], set()
    for i in range(len(completions)):
        for j in range(i + 1, len(completions)):
            if gold[i] == gold[j] or completions[i] == completions[j]:
                continue
            win, lose = (i, j) if gold[i] > gold[j] else (j, i)
            key = (completions[win], completions[lose])
            if key not in seen:
                seen.add(key)
                out.append(
                    {"prompt": prompt, "chosen": completions[win], "rejected": completions[lose], "answer": answer}
                )
    return out


def seed_set(groups: list[dict], size: int, condition: str, rng: random.Random) -> list[dict]:
    """`size` decided pairs from warm-start sample groups `{prompt, answer, completions, gold}`: at random
    (`plain`), or only those whose winner is also the longer completion (`spurious`)."""
    pool = [p for g in groups for p in decided_pairs(g["prompt"], g["completions"], g["gold"], g["answer"])]
    if condition == "spurious":
        pool = [p for p in pool if len(p["chosen"].strip()) > len(p["rejected"].strip())]
    elif condition != "plain":
        raise ValueError(f"`condition` must be one of {list(CONDITIONS)}, got {condition!r}.")
    if len(pool) < size:
        raise ValueError(
            f"the warm-start samples hold {len(pool)} {condition} decided pairs, fewer than the seed set's {size}; "
            "raise `max_seed_prompts`."
        )
    return rng.sample(pool, size)


def _spurious_available(groups: list[dict]) -> int:
    pool = [p for g in groups for p in decided_pairs(g["prompt"], g["completions"], g["gold"], g["answer"])]
    return sum(len(p["chosen"].strip()) > len(p["rejected"].strip()) for p in pool)


def random_pairs(groups: list[dict], size: int, rng: random.Random) -> list[dict]:
    """`size` random within-group pairs (distinct texts) with their gold label, ties included, as
    `{prompt, a, b, label}`: the extra labels of `frozen_matched`, picked as `online_random` picks them."""
    pool = []
    for g in groups:
        c, gold = g["completions"], g["gold"]
        for i in range(len(c)):
            for j in range(i + 1, len(c)):
                if c[i] != c[j]:
                    label = 1.0 if gold[i] > gold[j] else 0.0 if gold[i] < gold[j] else 0.5
                    pool.append({"prompt": g["prompt"], "a": c[i], "b": c[j], "label": label})
    if len(pool) < size:
        raise ValueError(f"the warm-start samples hold {len(pool)} pairs, fewer than the {size} extra labels.")
    return rng.sample(pool, size)


def exploited(run: dict) -> bool | None:
    """Whether a proxy-trained run over-optimised: the proxy's mean reward over the last `PROXY_WINDOW` steps above
    the first ones', and the validation gold accuracy ending at least `EXPLOIT_DROP` below its peak (step 0 included)."""
    proxy = [e["rewards/rm/mean"] for e in run["log"] if "rewards/rm/mean" in e]
    if not proxy:
        return None
    w = min(PROXY_WINDOW, max(1, len(proxy) // 2))
    up = sum(proxy[-w:]) / w > sum(proxy[:w]) / w
    accuracy = [p["accuracy"] for p in run["curve"]]
    return bool(up and max(accuracy) - accuracy[-1] >= EXPLOIT_DROP - 1e-9)


# ---------------------------------------------------------------------------------------------------- models
def as_labelled(pairs: list[dict]) -> list[dict]:
    """`{prompt, chosen, rejected}` pairs as `OnlineRewardModel`'s labelled pairs `{prompt, a, b, label}`.

    Example:
    >>> as_labelled([{"prompt": "rev 12=", "chosen": "21", "rejected": "2", "answer": "21"}])
    [{'prompt': 'rev 12=', 'a': '21', 'b': '2', 'label': 1.0}]
    """
    return [{"prompt": p["prompt"], "a": p["chosen"], "b": p["rejected"], "label": 1.0} for p in pairs]


def build_proxy(tokenizer, warm_weights: dict, seed: int):
    """A one-label `Qwen2ForSequenceClassification` of the policy's size (the kit's reward model, `small`), its
    backbone the warm-start policy's."""
    from ..kit.tiny import build_tiny_reward_model  # torch and transformers: not at start-up

    model = build_tiny_reward_model(tokenizer, size="small", seed=seed)
    missing, _ = model.load_state_dict(warm_weights, strict=False)
    assert set(missing) == {"score.weight"}, missing  # the whole backbone comes from the policy
    return model.float().eval()


def train_pairs(model, tokenizer, pairs: list[dict], settings: PreferenceSettings, seed: int) -> float:
    """`rm_epochs` passes over labelled pairs `{prompt, a, b, label}` in shuffled minibatches of `rm_batch_size`, one
    `OnlineRewardModel.train_pairs` step each (AdamW at `rm_learning_rate` with weight decay 0.01, gradients clipped
    at norm 1, the Bradley-Terry loss with ties as soft labels); returns the last epoch's mean loss."""
    from ..rewards import OnlineRewardModel  # torch and TRL: not at start-up

    rm = OnlineRewardModel(
        model, tokenizer, learning_rate=settings.rm_learning_rate, weight_decay=0.01, max_grad_norm=1.0
    )
    rng = random.Random(seed)
    order = list(range(len(pairs)))
    last = math.nan
    for _ in range(settings.rm_epochs):
        rng.shuffle(order)
        losses = []
        for start in range(0, len(order), settings.rm_batch_size):
            # A non-finite step raises (the error policy defaults to "raise"), so every call returns a loss.
            losses.append(rm.train_pairs([pairs[i] for i in order[start : start + settings.rm_batch_size]], steps=1))
        last = sum(losses) / len(losses)
    return last


def pair_accuracy(model, tokenizer, pairs: list[dict]) -> float | None:
    """Fraction of `{prompt, chosen, rejected}` pairs the reward model scores chosen above rejected, as
    `OnlineRewardModel.pair_accuracy` computes it (a frozen one over `model`, 64 texts per forward); None without
    pairs."""
    from ..rewards import OnlineRewardModel  # torch and TRL: not at start-up

    if not pairs:
        return None
    return OnlineRewardModel(model, tokenizer, batch_size=64).pair_accuracy(as_labelled(pairs))


def sample_groups(model, tokenizer, dataset, k: int, max_new_tokens: int, seed: int) -> list[dict]:
    """K completions at T = 1 per prompt of `dataset` (the policy's own distribution), with their gold."""
    import torch

    from ..kit.tasks import is_correct

    was_training = model.training
    model.eval()
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    groups = []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for start in range(0, len(dataset), 32):
                rows = dataset[start : start + 32]
                encoded = tokenizer(rows["prompt"], return_tensors="pt", padding=True)
                output = model.generate(
                    **encoded,
                    do_sample=True,
                    temperature=1.0,
                    top_k=0,
                    top_p=1.0,
                    num_return_sequences=k,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
                texts = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
                for n, (prompt, answer) in enumerate(zip(rows["prompt"], rows["answer"])):
                    completions = texts[n * k : (n + 1) * k]
                    gold = [float(is_correct(c, answer)) for c in completions]
                    groups.append({"prompt": prompt, "answer": answer, "completions": completions, "gold": gold})
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return groups


def fresh_pairs(groups: list[dict]) -> list[dict]:
    return [p for g in groups for p in decided_pairs(g["prompt"], g["completions"], g["gold"], g["answer"])]


def _longer_wins(pairs: list[dict]) -> float | None:
    """Among decided pairs of unequal length, the fraction whose gold winner is the longer completion."""
    unequal = [p for p in pairs if len(p["chosen"].strip()) != len(p["rejected"].strip())]
    if not unequal:
        return None
    return sum(len(p["chosen"].strip()) > len(p["rejected"].strip()) for p in unequal) / len(unequal)


def _weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------- jobs
def _fingerprint_of(settings: PreferenceSettings) -> dict:
    return settings_fingerprint(asdict(settings))


def proxy_dir(root: Path, seed: int, settings: PreferenceSettings) -> Path:
    """`proxy/seed{s}/size{N}-{digest}`: one directory per seed and proxy settings (the digest of `_proxy_settings`),
    so runs of other reward-model settings never share or overwrite a proxy."""
    recorded = json.dumps(_proxy_settings(settings), sort_keys=True).encode()
    return root / "proxy" / f"seed{seed}" / f"size{settings.seed_set_size}-{hashlib.sha256(recorded).hexdigest()[:8]}"


_PROXY_FIELDS = (
    "seed_set_size",
    "seed_prompts",
    "max_seed_prompts",
    "extra_prompts",
    "rm_learning_rate",
    "rm_epochs",
    "rm_batch_size",
    "fresh_prompts",
)


def _proxy_settings(settings: PreferenceSettings) -> dict:
    return {
        **{name: getattr(settings, name) for name in _PROXY_FIELDS},
        "matched_extra": settings.label_budget,
        "warm_start": warm_start_settings(settings.experiment()),
    }


def proxy_job(root: Path, seed: int, settings: PreferenceSettings, threads: int = 1) -> dict:
    """Sample the warm-start policy, build the seed sets of both conditions and train their proxies (`seed`: the
    seed set; `matched`: the seed set + `label_budget` random warm-start pairs), once; `proxy.json` records it."""
    directory = proxy_dir(root, seed, settings)
    info_path = directory / "proxy.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        differences = setting_differences(info["settings"], _proxy_settings(settings), "the cached proxies")
        if differences:
            raise SettingsMismatch(
                f"{directory} was built with other settings ({'; '.join(differences)}); use another `--output-dir` "
                f"for these settings, or delete {directory} (and the runs trained on it)."
            )
        return info
    import torch
    from transformers import set_seed

    from ..kit.tiny import build_tiny_model, build_tiny_tokenizer

    warm_start_job(root, seed, settings.experiment(), threads)
    demo = settings.demo
    with demo_environment(threads):
        tokenizer = build_tiny_tokenizer()
        weights = torch.load(warm_start_dir(root, seed) / "weights.pt", weights_only=True)
        policy = build_tiny_model(tokenizer, size="small", seed=seed)
        policy.load_state_dict(weights)
        train, validation, _ = tiny_datasets(settings.experiment(), seed)
        end = settings.max_seed_prompts + settings.extra_prompts
        if end > len(train):
            raise ValueError(f"`max_seed_prompts` + `extra_prompts` = {end} exceeds the {len(train)} train problems.")
        k, max_new = demo.num_generations, demo.max_completion_length
        seed_groups, used = [], 0
        while used < settings.max_seed_prompts and (
            not seed_groups or _spurious_available(seed_groups) < settings.seed_set_size
        ):
            more = min(settings.seed_prompts, settings.max_seed_prompts - used)
            # The first round draws with `seed` itself, later rounds with their own seeds.
            draw_seed = seed if used == 0 else seed + 1000 * (used // settings.seed_prompts)
            seed_groups += sample_groups(
                policy, tokenizer, train.select(range(used, used + more)), k, max_new, draw_seed
            )
            used += more
        extra_groups = sample_groups(
            policy,
            tokenizer,
            train.select(range(settings.max_seed_prompts, end)),
            k,
            max_new,
            seed + 1,
        )
        fresh = sample_groups(
            policy,
            tokenizer,
            validation.select(range(min(settings.fresh_prompts, len(validation)))),
            k,
            max_new,
            seed + 2,
        )
        warm_pairs = fresh_pairs(fresh)
        write_json(directory / "samples.json", {"seed_groups": seed_groups, "extra_groups": extra_groups})
        directory.mkdir(parents=True, exist_ok=True)
        info = {
            "seed": seed,
            "settings": _proxy_settings(settings),
            "seed_prompts_sampled": used,
            "warm_start_sample_gold": sum(sum(g["gold"]) for g in seed_groups) / (k * len(seed_groups)),
            "warm_start_fresh_pairs": len(warm_pairs),
            "warm_start_longer_wins": _longer_wins(warm_pairs),
            "conditions": {},
        }
        for condition in CONDITIONS:
            rng = random.Random(f"seed-set-{condition}-{seed}")
            pairs = seed_set(seed_groups, settings.seed_set_size, condition, rng)
            extra = random_pairs(extra_groups, settings.label_budget, rng)
            record = {"seed_set": pairs, "matched_extra": extra, "seed_set_longer_wins": _longer_wins(pairs)}
            for kind, labelled in (("seed", as_labelled(pairs)), ("matched", as_labelled(pairs) + extra)):
                set_seed(seed)
                model = build_proxy(tokenizer, weights, seed)
                loss = train_pairs(model, tokenizer, labelled, settings, seed)
                torch.save(model.state_dict(), directory / f"{condition}_{kind}.pt")
                record[kind] = {
                    "pairs": len(labelled),
                    "final_loss": loss,
                    "train_pair_accuracy": pair_accuracy(model, tokenizer, pairs),
                    "warm_start_pair_accuracy": pair_accuracy(model, tokenizer, warm_pairs),
                    "digest": _weights_digest(model),
                }
            info["conditions"][condition] = record
    write_json(info_path, info)
    return info


def _load_proxy(root: Path, seed: int, settings: PreferenceSettings, condition: str, kind: str, tokenizer):
    import torch

    from ..kit.tiny import build_tiny_model

    # The backbone's shapes come from the policy; the weights are the trained proxy's.
    skeleton = build_tiny_model(tokenizer, size="small", seed=seed).state_dict()
    model = build_proxy(tokenizer, skeleton, seed)
    model.load_state_dict(torch.load(proxy_dir(root, seed, settings) / f"{condition}_{kind}.pt", weights_only=True))
    return model


_LOG_PREFIXES = ("rewards/", "rm/")
_LOG_KEYS = ("reward", "completions/mean_length", "frac_reward_zero_std")


def run_job(root: Path, spec: RunSpec, settings: PreferenceSettings, group: str = "runs", threads: int = 1) -> dict:
    """Train one arm from the seed's warm start under one seed-set condition; writes and returns its result."""
    directory = spec.directory(root, group)
    result_path = directory / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    import torch
    from transformers import set_seed

    from ..kit.tiny import build_tiny_model, build_tiny_tokenizer
    from ..rewards import GoldLabeler, OnlineRewardModel, WeightedReward

    proxy_info = proxy_job(root, spec.seed, settings, threads)
    demo, arm = settings.demo, spec.arm_config
    start = time.perf_counter()
    with demo_environment(threads):
        tokenizer = build_tiny_tokenizer()
        model = build_tiny_model(tokenizer, size="small", seed=spec.seed)
        model.load_state_dict(torch.load(warm_start_dir(root, spec.seed) / "weights.pt", weights_only=True))
        train, validation, test = tiny_datasets(settings.experiment(), spec.seed)
        rm = None
        if arm["reward"] == "gold":
            # The seed-set proxies ride along at weight 0: what they would have said of the gold-trained policy.
            proxies = {
                f"proxy_{c}": OnlineRewardModel(
                    _load_proxy(root, spec.seed, settings, c, "seed", tokenizer),
                    tokenizer,
                    name=f"proxy_{c}",
                )
                for c in CONDITIONS
            }
            reward = WeightedReward(
                {"gold": gold_reward, **proxies}, weights={"gold": 1.0, **dict.fromkeys(proxies, 0.0)}
            )
        else:
            online = {}
            if "selector" in arm:
                selector = select_top(demo.num_generations) if arm["selector"] == "top" else arm["selector"]
                online = dict(
                    labeler=GoldLabeler(gold_reward),
                    update_every=1,
                    label_budget=settings.label_budget,
                    pairs_per_update=settings.pairs_per_update,
                    selector=selector,
                    replay_pairs=settings.replay_pairs,
                    heldout_fraction=0.0,  # fresh on-policy pairs measure the model; every paid label trains it
                    seed_pairs=proxy_info["conditions"][spec.condition]["seed_set"],
                    seed_epochs=0,  # already learnt (the frozen proxy is the start); they seed the replay buffer
                    update_steps=settings.update_steps,
                    learning_rate=settings.rm_learning_rate,
                    seed=spec.seed,
                )
            proxy = _load_proxy(root, spec.seed, settings, spec.condition, arm["rm"], tokenizer)
            rm = OnlineRewardModel(proxy, tokenizer, name="rm", **online)
            start_digest = _weights_digest(rm.model)
            reward = WeightedReward({"rm": rm, "gold": gold_reward}, weights={"rm": 1.0, "gold": 0.0})
        trainer, curve = tiny_grpo_trainer(model, tokenizer, reward, train, validation, settings, directory, spec.seed)
        set_seed(spec.seed)
        trainer.train()
        train_seconds = time.perf_counter() - start
        fresh = fresh_pairs(
            sample_groups(
                model,
                tokenizer,
                validation.select(range(min(settings.fresh_prompts, len(validation)))),
                demo.num_generations,
                demo.max_completion_length,
                spec.seed + 3,
            )
        )
        result = {
            **asdict(spec),
            "cell": spec.cell,
            "steps": trainer.state.global_step,
            "validation_accuracy": curve.points[-1]["accuracy"],
            "curve": curve.points,
            "log": [
                {"step": e["step"]} | {k: v for k, v in e.items() if k in _LOG_KEYS or k.startswith(_LOG_PREFIXES)}
                for e in trainer.state.log_history
                if "reward" in e
            ],
            "scored_completions": trainer.state.global_step * demo.grpo_batch_size,
            "fresh_pairs": len(fresh),
            "fresh_longer_wins": _longer_wins(fresh),
        }
        if rm is not None:
            end_digest = _weights_digest(rm.model)
            result |= {
                "labels_used": rm.labels_used,
                "label_budget": settings.label_budget if "selector" in arm else 0,
                "rm_updates": rm.updates,
                "rm_start_digest": start_digest,
                "rm_end_digest": end_digest,
                "rm_weights_changed": start_digest != end_digest,
                "rm_fresh_pair_accuracy": pair_accuracy(rm.model, tokenizer, fresh),
            }
        else:
            result |= {"labels_used": 0, "label_budget": 0}
        seed_kind = "seed" if rm is None else arm["rm"]
        result["seed_rm_fresh_pair_accuracy"] = {
            c: pair_accuracy(_load_proxy(root, spec.seed, settings, c, seed_kind, tokenizer), tokenizer, fresh)
            for c in (CONDITIONS if rm is None else (spec.condition,))
        }
        if spec.split is not None:
            split = {"test": test, "validation": validation}[spec.split]
            result[f"{spec.split}_accuracy"] = greedy_accuracy(model, tokenizer, split, demo.max_completion_length)
        result["exploited"] = exploited(result)
    result["train_seconds"] = train_seconds
    result["seconds"] = time.perf_counter() - start
    result["settings"] = _fingerprint_of(settings)
    write_json(result_path, result)
    return result


# ---------------------------------------------------------------------------------------------------- the grid
def grid_specs(conditions: list[str], arms: list[str], seeds: list[int], split: str | None = "test") -> list[RunSpec]:
    """Seed-major: if time runs out, the finished seeds are complete. `gold` once per seed (shared)."""
    specs = []
    for seed in seeds:
        if "gold" in arms:
            specs.append(RunSpec(SHARED, None, "gold", ARMS["gold"], seed, split))
        for condition in conditions:
            specs += [RunSpec(condition, None, a, ARMS[a], seed, split) for a in arms if a != "gold"]
    return specs


def execute(root: Path, settings: PreferenceSettings, specs: list[RunSpec], group: str = "runs", log=print):
    """Run the specs one after another in this process (finished ones are skipped); returns every result.

    A finished run or cached warm start made with other settings raises `SettingsMismatch` before anything trains.
    """
    for seed in sorted({s.seed for s in specs}):
        path = warm_start_dir(root, seed) / "warmstart.json"
        if path.exists():
            check_warm_start(path, settings.experiment())
    done = [run_finished(s.directory(root, group) / "result.json", asdict(settings), s.arm_config) for s in specs]
    results = []
    for n, spec in enumerate(specs, 1):
        if not done[n - 1]:
            try:
                result = run_job(root, spec, settings, group)
            except SettingsMismatch:
                raise
            except Exception as err:  # one failed run must not stop the grid; it is reported and stays to do
                log(f"FAILED {spec.cell}/{spec.arm}/seed{spec.seed}: {type(err).__name__}: {err}")
                continue
            log(f"[{n}/{len(specs)}] {spec.cell}/{spec.arm}/seed{spec.seed}: {result['seconds']:.0f} s")
        results.append(json.loads((spec.directory(root, group) / "result.json").read_text()))
    return results


def select_seed_set_size(root: Path, settings: PreferenceSettings, sizes: list[int], log=print) -> dict:
    """`frozen` at each candidate seed-set size, both conditions, validation only, on the selection seed; keeps the
    largest size exploited in both conditions (else the one exploited in most, then the largest drop)."""
    trials = []
    for size in sizes:
        sized = replace(settings, seed_set_size=size)
        specs = grid_specs(list(CONDITIONS), ["frozen"], [settings.select_seed], split=None)
        for result in execute(root, sized, specs, group=f"select/size{size}", log=log):
            accuracy = [p["accuracy"] for p in result["curve"]]
            proxy = [e["rewards/rm/mean"] for e in result["log"]]
            trials.append(
                {
                    "seed_set_size": size,
                    "condition": result["condition"],
                    "exploited": result["exploited"],
                    "validation_curve": accuracy,
                    "peak_minus_final": max(accuracy) - accuracy[-1],
                    "proxy_first_last": [
                        sum(proxy[:PROXY_WINDOW]) / len(proxy[:PROXY_WINDOW]),
                        sum(proxy[-PROXY_WINDOW:]) / len(proxy[-PROXY_WINDOW:]),
                    ],
                    "rm_fresh_pair_accuracy": result["rm_fresh_pair_accuracy"],
                    "seconds": result["seconds"],
                }
            )

    def rank(size):
        mine = [t for t in trials if t["seed_set_size"] == size]
        return (sum(bool(t["exploited"]) for t in mine), sum(t["peak_minus_final"] for t in mine), size)

    both = [s for s in sizes if rank(s)[0] == len(CONDITIONS)]
    chosen = max(both) if both else max(sizes, key=rank)
    record = {
        "seed_set_size": chosen,
        "exploited_in_both": bool(both),
        "rule": "largest seed-set size at which `frozen` is exploited in both conditions (proxy reward up, validation "
        f"gold accuracy ending >= {EXPLOIT_DROP:.0%} below its peak), seed {settings.select_seed}, validation split; "
        "else the size exploited in most conditions, then the largest drop",
        "trials": trials,
        "settings": _fingerprint_of(settings),
    }
    write_json(root / "selection.json", record)
    return record


def write_selection_record(root: Path) -> Path:
    """DIR/selection.md: every validation run under DIR/select (the seed-set sizes and the tuning runs), with the
    settings that differ from the defaults, its validation gold curve and whether it was exploited."""
    defaults = _fingerprint_of(FULL_SETTINGS)
    lines = [
        "# Validation runs (selection seed, validation split only)",
        "",
        "| group | seed set | arm | settings that differ from the defaults | validation gold accuracy % at steps "
        "0, 10, ... | proxy first -> last 10 steps | exploited | RM pair acc. fresh % | labels |",
        "|---|---|---|---|---|---|---|---:|---:|",
    ]
    for path in sorted((root / "select").glob("*/*/*/seed*/result.json")):
        r = json.loads(path.read_text())
        changed = [
            d.replace(" in run, ", " (default ").replace(" here", ")")
            for d in setting_differences(r["settings"], defaults, "run")
        ]
        curve = " ".join(f"{100 * p['accuracy']:.0f}" for p in r["curve"])
        first, last = _window(r, "rewards/rm/mean", False), _window(r, "rewards/rm/mean", True)
        proxy = "-" if first is None else f"{first:.2f} -> {last:.2f}"
        fresh = r.get("rm_fresh_pair_accuracy")
        lines.append(
            f"| {path.parts[-5]} | {r['condition']} | {r['arm']} | {', '.join(changed) or '-'} | {curve} | {proxy} | "
            f"{r['exploited']} | {'-' if fresh is None else f'{100 * fresh:.0f}'} | {r['labels_used']} |"
        )
    if (root / "selection.json").exists():
        record = json.loads((root / "selection.json").read_text())
        lines += ["", f"Seed-set size chosen: {record['seed_set_size']} ({record['rule']})."]
    out = root / "selection.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------------------- summary
def _by_seed(runs: list[dict], key) -> dict[int, float]:
    out = {}
    for r in runs:
        value = key(r)
        if value is not None:
            out[r["seed"]] = value
    return out


def _window(run: dict, key: str, last: bool) -> float | None:
    values = [e[key] for e in run["log"] if key in e]
    if not values:
        return None
    w = min(PROXY_WINDOW, len(values))
    chunk = values[-w:] if last else values[:w]
    return sum(chunk) / len(chunk)


def summarise(
    results: list[dict], warm_starts: dict[int, dict], settings: PreferenceSettings, arms: list[str]
) -> dict:
    """Per condition: per-arm means over seeds, the paired comparisons and one verdict per claim."""
    gold_runs = sorted([r for r in results if r["arm"] == "gold"], key=lambda r: r["seed"])
    conditions = {}
    for condition in sorted({r["condition"] for r in results if r["condition"] != SHARED}):
        by_arm = {
            a: sorted([r for r in results if r["condition"] == condition and r["arm"] == a], key=lambda r: r["seed"])
            for a in arms
            if a != "gold"
        }
        if "gold" in arms:
            by_arm = {"gold": gold_runs, **by_arm}
        table = {}
        for arm, runs in by_arm.items():
            if not runs:
                continue
            test = _by_seed(runs, lambda r: r.get("test_accuracy"))
            peak = _by_seed(runs, lambda r: max(p["accuracy"] for p in r["curve"]))
            final = _by_seed(runs, lambda r: r["curve"][-1]["accuracy"])
            proxy_key = "rewards/rm/mean" if arm != "gold" else f"rewards/proxy_{condition}/mean"
            table[arm] = {
                "seeds": sorted(test),
                "test_accuracy": test,
                "test_mean_se": mean_se(list(test.values())),
                "gain_mean_se": mean_se(
                    [v - warm_starts[s]["test_accuracy"] for s, v in test.items() if s in warm_starts]
                ),
                "validation_peak_mean_se": mean_se(list(peak.values())),
                "validation_final_mean_se": mean_se(list(final.values())),
                "peak_minus_final_mean_se": mean_se([peak[s] - final[s] for s in final]),
                "proxy_first": mean_se([v for r in runs if (v := _window(r, proxy_key, False)) is not None]),
                "proxy_last": mean_se([v for r in runs if (v := _window(r, proxy_key, True)) is not None]),
                "sample_gold_first": mean_se(
                    [v for r in runs if (v := _window(r, "rewards/gold/mean", False)) is not None]
                ),
                "sample_gold_last": mean_se(
                    [v for r in runs if (v := _window(r, "rewards/gold/mean", True)) is not None]
                ),
                "length_last": mean_se(
                    [v for r in runs if (v := _window(r, "completions/mean_length", True)) is not None]
                ),
                "exploited": _by_seed(runs, lambda r: r.get("exploited")),
                "rm_fresh_pair_accuracy": _by_seed(
                    runs,
                    lambda r, c=condition: r.get("rm_fresh_pair_accuracy", r["seed_rm_fresh_pair_accuracy"].get(c)),
                ),
                "fresh_longer_wins": mean_se(
                    [r["fresh_longer_wins"] for r in runs if r["fresh_longer_wins"] is not None]
                ),
                "labels_used": _by_seed(runs, lambda r: r["labels_used"]),
                "label_fraction": _by_seed(runs, lambda r: r["labels_used"] / r["scored_completions"]),
                "label_budget": max(r["label_budget"] for r in runs),
                "rm_weights_changed": _by_seed(runs, lambda r: r.get("rm_weights_changed")),
                "seconds": _by_seed(runs, lambda r: r["seconds"]),
                "train_seconds": _by_seed(runs, lambda r: r["train_seconds"]),
            }
            table[arm]["rm_fresh_mean_se"] = mean_se(list(table[arm]["rm_fresh_pair_accuracy"].values()))
        conditions[condition] = {"arms": table, "claims": _claims(table)}
    return {"conditions": conditions}


def _claims(table: dict) -> list[dict]:
    """One verdict per claim of the experiment for each online arm present (test accuracy unless said)."""
    claims = []

    def acc(arm):
        return table[arm]["test_accuracy"]

    def paired_claim(arm: str, ref: str, claim: str) -> dict:
        """`arm` minus `ref`, paired by seed: holds when the interval excludes 0 on the positive side."""
        d = paired_difference(acc(arm), acc(ref))
        return {"claim": claim, "diff": d, "verdict": verdict(arm, ref, d), "holds": d["detectable"] and d["mean"] > 0}

    if "frozen" in table:
        n = len(table["frozen"]["exploited"])
        hits = sum(bool(v) for v in table["frozen"]["exploited"].values())
        claims.append(
            {
                "claim": "validity: `frozen` is exploited (proxy up, validation gold ends >= 5 points below its peak) in "
                "most seeds",
                "verdict": f"{'holds' if hits > n / 2 else 'does not hold'}: {hits}/{n} seeds",
                "holds": hits > n / 2,
            }
        )
    if "gold" in table and "frozen" in table:
        claims.append(paired_claim("gold", "frozen", "gold vs frozen (the gap)"))
    if "frozen_matched" in table and "frozen" in table:
        claims.append(paired_claim("frozen_matched", "frozen", "frozen_matched vs frozen (more warm-start labels)"))
    for arm in ONLINE_ARMS:
        if arm not in table:
            continue
        for ref in ("frozen", "frozen_matched"):
            if ref in table:
                claims.append(paired_claim(arm, ref, f"{arm} beats {ref}"))
        if "gold" in table and "frozen" in table:
            seeds = sorted(set(acc(arm)) & set(acc("gold")) & set(acc("frozen")))
            gap = [acc("gold")[s] - acc("frozen")[s] for s in seeds]
            got = [acc(arm)[s] - acc("frozen")[s] for s in seeds]
            ratio = sum(got) / sum(gap) if seeds and sum(gap) else math.nan
            midpoint = {s: (acc("gold")[s] + acc("frozen")[s]) / 2 for s in seeds}
            d = paired_difference({s: acc(arm)[s] for s in seeds}, midpoint)
            claims.append(
                {
                    "claim": f"{arm} recovers at least half of the frozen-to-gold gap",
                    "ratio": ratio,
                    "diff": d,
                    "verdict": f"recovered {ratio:.0%} of the gap (sum over seeds); "
                    + verdict(arm, "the frozen-gold midpoint", d),
                    "holds": d["detectable"] and d["mean"] > 0,
                }
            )
        fractions = list(table[arm]["label_fraction"].values())
        claims.append(
            {
                "claim": f"{arm} labels at most about 5 % of the scored completions",
                "verdict": f"{max(fractions):.1%} of scored completions labelled (labels used "
                f"{sorted(set(table[arm]['labels_used'].values()))}, budget {table[arm]['label_budget']})",
                "holds": max(fractions) <= 0.05 + 1e-9,
            }
        )
        if "frozen" in table:
            seconds, ref = table[arm]["train_seconds"], table["frozen"]["train_seconds"]
            ratios = [seconds[s] / ref[s] for s in sorted(set(seconds) & set(ref))]
            m, se = mean_se(ratios)
            claims.append(
                {
                    "claim": f"{arm} takes at most 1.3x frozen's wall time",
                    "ratios": ratios,
                    "verdict": f"wall-time ratio {m:.2f}"
                    + ("" if math.isnan(se) else f" ± {se:.2f}")
                    + f" (per seed {', '.join(f'{r:.2f}' for r in ratios)})",
                    "holds": bool(ratios) and m <= 1.3,
                }
            )
    return claims


def _pm(pair, scale=100.0, digits=1) -> str:
    mean, se = pair
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean * scale:.{digits}f}" + ("" if se is None or math.isnan(se) else f" ± {se * scale:.{digits}f}")


def markdown(summary: dict, meta: dict) -> str:
    lines = ["# Online preference learning: over-optimisation", "", meta["description"], ""]
    if "selection" in meta:
        lines += [f"Seed-set size: {meta['selection']}", ""]
    for condition, cell in summary["conditions"].items():
        lines += [
            f"## Seed set `{condition}`",
            "",
            "| arm | seeds | test acc. % | gain (points) | val. peak % | val. final % | peak - final | proxy first -> last 10 steps | "
            "sample gold first -> last % | length, last | exploited | RM pair acc. on fresh on-policy pairs % | "
            "labels (fraction) | s/run |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for arm, a in cell["arms"].items():
            hits = [v for v in a["exploited"].values() if v is not None]
            labels = sorted(set(a["labels_used"].values()))
            fraction = max(a["label_fraction"].values()) if a["label_fraction"] else 0.0
            lines.append(
                f"| {arm} | {len(a['seeds'])} | {_pm(a['test_mean_se'])} | {_pm(a['gain_mean_se'])} | "
                f"{_pm(a['validation_peak_mean_se'])} | {_pm(a['validation_final_mean_se'])} | "
                f"{_pm(a['peak_minus_final_mean_se'])} | {_pm(a['proxy_first'], 1, 2)} -> {_pm(a['proxy_last'], 1, 2)} | "
                f"{_pm(a['sample_gold_first'])} -> {_pm(a['sample_gold_last'])} | {_pm(a['length_last'], 1, 2)} | "
                f"{(str(sum(map(bool, hits))) + '/' + str(len(hits))) if hits else '-'} | {_pm(a['rm_fresh_mean_se'])} | "
                f"{'/'.join(map(str, labels))} ({fraction:.1%}) | {mean_se(list(a['seconds'].values()))[0]:.0f} |"
            )
        lines += ["", "Claims (paired by seed, same warm start; test accuracy unless said):", ""]
        lines += [f"- {c['claim']}: **{'yes' if c['holds'] else 'no'}**. {c['verdict']}" for c in cell["claims"]]
        lines.append("")
    missing = meta.get("missing", [])
    lines += [
        f"Missing runs ({len(missing)}): {', '.join(missing)}" if missing else "Every expected run finished.",
        "",
    ]
    return "\n".join(lines)


def plot_condition(condition: str, results: list[dict], arms: list[str], out: Path) -> Path:
    """Validation gold accuracy, proxy reward and the samples' gold accuracy against step per arm, completion length,
    the RM's pair accuracy on fresh on-policy pairs and the test accuracy per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs_by_arm = {
        a: sorted(
            [r for r in results if r["arm"] == a and r["condition"] in ((SHARED,) if a == "gold" else (condition,))],
            key=lambda r: r["seed"],
        )
        for a in arms
    }
    runs_by_arm = {a: runs for a, runs in runs_by_arm.items() if runs}
    colors = {a: f"C{i}" for i, a in enumerate(ARMS)}
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    panels = [
        (axes[0, 0], "curve", lambda a: "accuracy", "gold accuracy, validation (greedy)", False),
        (
            axes[0, 1],
            "log",
            lambda a: f"rewards/proxy_{condition}/mean" if a == "gold" else "rewards/rm/mean",
            "proxy reward of the samples (10-step mean; gold: the seed-set proxy)",
            True,
        ),
        (
            axes[0, 2],
            "log",
            lambda a: "rewards/gold/mean",
            "gold accuracy of the training samples (10-step mean)",
            True,
        ),
        (axes[1, 0], "log", lambda a: "completions/mean_length", "completion length, tokens (10-step mean)", True),
    ]
    for ax, source, key, title, smooth in panels:
        for arm, runs in runs_by_arm.items():
            steps, values = mean_curves(runs, source, key(arm))
            if steps:
                ax.plot(steps, moving_mean(values) if smooth else values, label=arm, color=colors[arm])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("GRPO step")
    for ax, key, title in (
        (axes[1, 1], "fresh", "RM pair accuracy % on fresh on-policy pairs (end)"),
        (axes[1, 2], "test_accuracy", "test accuracy % (dots: seeds; bar: mean ± se)"),
    ):
        for i, (arm, runs) in enumerate(runs_by_arm.items()):
            if key == "fresh":
                values = [
                    100 * v
                    for r in runs
                    if (v := r.get("rm_fresh_pair_accuracy", r["seed_rm_fresh_pair_accuracy"].get(condition)))
                    is not None
                ]
            else:
                values = [100 * r[key] for r in runs if key in r]
            if not values:
                continue
            mean, se = mean_se(values)
            ax.scatter([i] * len(values), values, color=colors[arm], alpha=0.5, s=15)
            ax.errorbar([i + 0.15], [mean], yerr=[0 if math.isnan(se) else se], fmt="o", color=colors[arm], capsize=4)
        ax.set_xticks(range(len(runs_by_arm)), list(runs_by_arm), rotation=30, fontsize=8)
        ax.set_title(title, fontsize=10)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(
        f"seed set: {condition} (gold's fresh-pair accuracy: the {condition} seed-set proxy on gold's policy)"
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=70)
    plt.close(fig)
    from PIL import Image

    with Image.open(out) as image:  # a 64-colour palette, small enough to commit to docs/
        image.convert("RGB").quantize(colors=64).save(out, optimize=True)
    return out


def _meta(settings: PreferenceSettings, argv: list[str], root: Path) -> dict:
    import torch
    import transformers
    import trl

    d = settings.demo
    meta = {
        "description": (
            f"Digit reversal, tiny Qwen2 'small' (0.8 M parameters), the runner's SFT warm start per seed, then GRPO "
            f"({settings.grpo_steps} steps of {d.grpo_batch_size // d.num_generations} prompts x {d.num_generations}, "
            f"lr {d.grpo_learning_rate}, T = 1, z-score). Gold: exact answer. Proxy: Bradley-Terry reward model (policy "
            f"backbone) on {settings.seed_set_size} gold-labelled warm-start pairs ({settings.rm_epochs} epochs, lr "
            f"{settings.rm_learning_rate}). Online arms: {settings.pairs_per_update} labels per step, budget "
            f"{settings.label_budget} ({settings.label_budget / (settings.grpo_steps * d.grpo_batch_size):.1%} of "
            f"{settings.grpo_steps * d.grpo_batch_size} scored completions), {settings.update_steps} AdamW steps per "
            f"update on the new pairs + {settings.replay_pairs} replayed. Test accuracy on {d.num_heldout} held-out "
            "problems, greedy."
        ),
        "settings": asdict(settings),
        "command": "trl-grpo-ext preference-experiment " + " ".join(argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
    }
    if (root / "selection.json").exists():
        selection = json.loads((root / "selection.json").read_text())
        meta["selection"] = f"{selection['seed_set_size']} ({selection['rule']}; DIR/selection.json)"
    return meta


def main(argv: list[str] | None = None) -> int:
    """`trl-grpo-ext preference-experiment ...`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="trl-grpo-ext preference-experiment",
        description="Over-optimisation of a learnt reward model, frozen vs learnt online, on the demo task.",
    )
    parser.add_argument(
        "--output-dir", default=None, help=f"default: {DEFAULT_OUTPUT_DIR} ({DEFAULT_OUTPUT_DIR}-quick)"
    )
    parser.add_argument("--quick", action="store_true", help="CI size: 3 GRPO steps, 1 seed, a 20-step warm start")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None, help="GRPO steps per run")
    parser.add_argument("--seed-set-size", type=int, default=None, help="default: DIR/selection.json's, else 128")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=list(ARMS))
    parser.add_argument(
        "--select",
        nargs="*",
        type=int,
        default=None,
        metavar="SIZE",
        help="choose the seed-set size among these (default 16 64 128) on validation, then stop",
    )
    parser.add_argument(
        "--validate",
        default=None,
        metavar="TAG",
        help="train --arms on the selection seed, validation split only (to tune on), in DIR/select/size{N}-TAG",
    )
    parser.add_argument("--grpo-learning-rate", type=float, default=None, help="default: 5e-5")
    parser.add_argument("--rm-learning-rate", type=float, default=None, help="default: 1e-4")
    parser.add_argument("--update-steps", type=int, default=None, help="online AdamW steps per update; default 4")
    parser.add_argument("--report-only", action="store_true", help="summarise finished runs, train nothing")
    args = parser.parse_args(argv)

    settings = QUICK_SETTINGS if args.quick else FULL_SETTINGS
    if args.steps is not None:
        settings = replace(settings, grpo_steps=args.steps)
    if args.seeds:
        settings = replace(settings, seeds=tuple(args.seeds))
    if args.grpo_learning_rate is not None:
        settings = replace(settings, demo=replace(settings.demo, grpo_learning_rate=args.grpo_learning_rate))
    if args.rm_learning_rate is not None:
        settings = replace(settings, rm_learning_rate=args.rm_learning_rate)
    if args.update_steps is not None:
        settings = replace(settings, update_steps=args.update_steps)
    root = Path(args.output_dir or (DEFAULT_OUTPUT_DIR + ("-quick" if args.quick else "")))
    root.mkdir(parents=True, exist_ok=True)
    try:
        if args.select is not None:
            record = select_seed_set_size(root, settings, args.select or [16, 64, 128])
            write_selection_record(root)
            print(json.dumps({k: v for k, v in record.items() if k != "settings"}, indent=1))
            return 0
        size = args.seed_set_size
        if size is None and (root / "selection.json").exists():
            size = json.loads((root / "selection.json").read_text())["seed_set_size"]
        if size is not None:
            settings = replace(settings, seed_set_size=size)
        if args.validate:
            specs = grid_specs(args.conditions, args.arms, [settings.select_seed], split=None)
            group = f"select/size{settings.seed_set_size}-{args.validate}"
            for r in execute(root, settings, specs, group=group):
                curve = " ".join(f"{p['accuracy']:.3f}" for p in r["curve"])
                print(
                    f"{r['cell']}/{r['arm']}: validation {curve}; exploited {r['exploited']}; labels {r['labels_used']}"
                )
            write_selection_record(root)
            return 0
        specs = grid_specs(args.conditions, args.arms, list(settings.seeds))
        start = time.perf_counter()
        if args.report_only:
            results = [
                json.loads(p.read_text())
                for s in specs
                if run_finished(p := s.directory(root) / "result.json", asdict(settings), s.arm_config)
            ]
        else:
            results = execute(root, settings, specs)
        warm_starts = {
            s: check_warm_start(warm_start_dir(root, s) / "warmstart.json", settings.experiment())
            for s in settings.seeds
            if (warm_start_dir(root, s) / "warmstart.json").exists()
        }
    except SettingsMismatch as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finished = {(r["cell"], r["arm"], r["seed"]) for r in results}
    meta = _meta(settings, argv, root)
    meta["missing"] = [f"{s.cell}/{s.arm}/seed{s.seed}" for s in specs if (s.cell, s.arm, s.seed) not in finished]
    summary = {
        **meta,
        **summarise(results, warm_starts, settings, args.arms),
        "warm_starts": {
            s: {k: w.get(k) for k in ("validation_accuracy", "test_accuracy", "steps")} for s, w in warm_starts.items()
        },
        "wall_seconds": time.perf_counter() - start,
    }
    (root / "results.json").write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    (root / "results.md").write_text(markdown(summary, meta), encoding="utf-8")
    paths = [root / "results.json", root / "results.md"]
    for condition in args.conditions:
        if any(r["condition"] == condition for r in results):
            paths.append(plot_condition(condition, results, args.arms, root / "plots" / f"{condition}.png"))
    print((root / "results.md").read_text())
    print(f"{len(results)}/{len(specs)} runs finished; {time.perf_counter() - start:.0f} s")
    for path in paths:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
