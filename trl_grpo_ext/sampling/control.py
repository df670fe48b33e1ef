r"""A closed-loop ladder: after every generation batch, move the ladder's temperatures toward a target signal.

GRPO learns nothing from a group whose K rewards are all equal. The signal is TRL's `frac_reward_zero_std`: the
fraction z_n of groups of generation batch n whose reward has (close to) zero standard deviation, measured on the
global batch. The controller multiplies the configured ladder T_i^0 (`temperature_range`, slot i) by a scale c_n:

    e_n     = z_n - z*                                               error against the target z*
    e_n     = sign(e_n) * max(|e_n| - delta, 0)                      no move inside the band z* +- delta
    c_{n+1} = clip(c_n * exp(eta * e_n), t_floor / T_0^0, t_ceiling / T_{K-1}^0)        c_0 = 1
    T_i(n)  = c_n * T_i^0

Too many groups without signal (z_n > z* + delta): hotter; fewer (z_n < z* - delta): colder. It is integral control
in log-temperature (temperature divides the logits, so equal ratios are equal steps); the clip keeps the whole ladder
inside `temperature_bounds` = [t_floor, t_ceiling] with its shape (the ratio T_{K-1} / T_0) unchanged, and stops the
scale from winding up while the ladder sits at a bound. The scale after batch n is used for batch n + 1.

The gain eta is in (0, `MAX_CONTROL_RATE`] = (0, 10]: |e_n| <= 1, so one batch moves the ladder by at most exp(10) ~
22000x, far beyond any bounds. The step is compared with the bounds in log space before it is taken, so no gain
overflows. A group with fewer than two scorable completions (every objective NaN, e.g. a judge outage under the
`skip` fault policy) has no spread to measure and is left out of z_n; a batch with no group measured gives z_n = NaN
and leaves the ladder where it is.

`LadderController` holds c_n; it is also a transformers `TrainerCallback` and `ExportableState`, so the trainer's
checkpoints (`trainer_state.json`, `stateful_callbacks`) carry it and a resumed run continues with the same ladder.
A checkpoint records the controller's settings with c_n. A run resumed with the same settings continues exactly; one
resumed with other settings (range, bounds, target, rate, tolerance) keeps its own, clips c_n into its own scale
bounds and warns, naming what changed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from .dynamic import tied_groups

CONTROL_SIGNALS = ("none", "zero_std")
MAX_CONTROL_RATE = 10.0  # the largest gain eta: exp(10 * 1) is already a 22000x step, clipped by any bounds


def zero_std_fraction(rewards_per_func: torch.Tensor, reward_weights: torch.Tensor, num_generations: int) -> float:
    r"""Fraction of groups whose weighted rewards are all equal: what TRL's `frac_reward_zero_std` means to count.

    r_j = sum_k w_k * rewards_per_func[j, k] (NaN skipped; NaN when every objective is NaN, as TRL does);
    z = mean over the measured groups g of [ isclose(max r_g, min r_g) ] (`dynamic.tied_groups`). A group is measured
    when its spread is defined: at least two of its completions have a reward. TRL's metric (with
    `multi_objective_aggregation="sum_then_normalize"` and `scale_rewards` "group" or "none") tests
    `isclose(nanstd(r_g), 0)` instead, which misses groups tied at rewards such as 0.2 or 0.8 (their float32 std is
    rounding noise above isclose's 1e-8), so it can read lower than this. TRL counts an unmeasured group as one with
    signal (its std is NaN); here it is left out, so a batch where nothing could be scored does not read as "every
    group teaches". K = 1 gives 1.0.

    Args:
        rewards_per_func (`torch.Tensor` of shape `(G * K, F)`):
            Rewards of the global batch (as gathered by TRL's `_calculate_rewards`), groups of K contiguous.
        reward_weights (`torch.Tensor` of shape `(F,)`):
            Weight of each reward function.
        num_generations (`int`):
            Group size K.

    Returns:
        `float` in [0, 1], or NaN when no group is measured.

    Example:
    >>> rewards = torch.tensor([[1.0], [1.0], [0.0], [1.0]])  # group 0: equal rewards; group 1: not
    >>> zero_std_fraction(rewards, torch.tensor([1.0]), num_generations=2)
    0.5
    >>> rewards[3] = float("nan")  # group 1 has one reward left: no spread to measure
    >>> zero_std_fraction(rewards, torch.tensor([1.0]), num_generations=2)
    1.0
    """
    tied, measured = tied_groups(rewards_per_func, reward_weights, num_generations)
    if num_generations == 1:
        return 1.0
    if not measured.any():  # groups with fewer than two rewards have no std: not measured
        return math.nan
    return tied[measured].float().mean().item()


def next_scale(
    scale: float, signal: float, *, target: float, rate: float, tolerance: float, bounds: tuple[float, float]
) -> float:
    r"""One step of the control law: c' = clip(c * exp(eta * e), lo, hi), e = signal - target outside the band.

    e = signal - target, shrunk toward 0 by `tolerance` (0 inside [target - tolerance, target + tolerance]).
    A non-finite signal (no group measured) leaves the scale unchanged. The step eta * e is compared with the bounds
    in log space before it is taken, so any gain (even one that would overflow `exp`) gives at most the bound.

    Args:
        scale (`float`):
            The current scale c_n (> 0).
        signal (`float`):
            The measured fraction z_n.
        target (`float`):
            The target z*.
        rate (`float`):
            eta, the gain: log c moves by eta * e per generation batch.
        tolerance (`float`):
            delta, half-width of the band around the target where the ladder does not move.
        bounds (`tuple[float, float]`):
            `(lo, hi)`, the allowed scales (`LadderController.scale_bounds`).

    Returns:
        `float`: c_{n+1}.

    Example:
    >>> round(next_scale(1.0, 1.0, target=0.2, rate=0.5, tolerance=0.0, bounds=(0.1, 10.0)), 6)  # exp(0.4)
    1.491825
    >>> next_scale(1.0, 0.22, target=0.2, rate=0.5, tolerance=0.05, bounds=(0.1, 10.0))  # inside the band
    1.0
    >>> next_scale(1.0, 1.0, target=0.2, rate=5.0, tolerance=0.0, bounds=(0.1, 2.0))  # clipped at the ceiling
    2.0
    """
    if not math.isfinite(signal):
        return scale
    error = signal - target
    error = math.copysign(max(abs(error) - tolerance, 0.0), error)
    lo, hi = bounds
    step = rate * error if error else 0.0  # log c moves by this much; no error, no move (even at an infinite gain)
    if step >= math.log(hi / scale):
        return hi
    if step <= math.log(lo / scale):
        return lo
    return min(max(scale * math.exp(step), lo), hi)


class LadderController(TrainerCallback, ExportableState):
    r"""The state of the closed-loop ladder (the scale c_n) and the law that moves it; see the module docstring.

    Args:
        temperature_range (`Sequence[float]`):
            `[T_0^0, T_{K-1}^0]`, the ends of the configured ladder (scale 1).
        temperature_bounds (`Sequence[float]`):
            `[t_floor, t_ceiling]`; must contain `temperature_range`.
        target (`float`):
            z*, the target fraction of groups without signal.
        rate (`float`):
            eta, in (0, `MAX_CONTROL_RATE`] = (0, 10].
        tolerance (`float`, *optional*, defaults to `0.0`):
            delta (>= 0).
        signal (`str`, *optional*, defaults to `"zero_std"`):
            The measured signal; only `"zero_std"` (`zero_std_fraction`).

    Example:
    >>> control = LadderController([0.1, 0.2], [0.05, 1.0], target=0.2, rate=1.0)
    >>> round(control.update(1.0), 6)  # every group identical: hotter by exp(0.8)
    2.225541
    >>> [round(t, 6) for t in control.apply([0.1, 0.15, 0.2])]
    [0.222554, 0.333831, 0.445108]
    >>> round(control.update(0.0), 6), control.updates  # no group identical: colder by exp(-0.2)
    (1.822119, 2)
    """

    def __init__(
        self,
        temperature_range: Sequence[float],
        temperature_bounds: Sequence[float],
        target: float,
        rate: float,
        tolerance: float = 0.0,
        signal: str = "zero_std",
    ):
        if signal not in CONTROL_SIGNALS[1:]:
            raise ValueError(f"`signal` must be one of {list(CONTROL_SIGNALS[1:])}, got {signal!r}.")
        if not 0 < rate <= MAX_CONTROL_RATE:
            raise ValueError(f"`rate` must be in (0, {MAX_CONTROL_RATE:g}], got {rate!r}.")
        t_min, t_max = (float(t) for t in temperature_range)
        floor, ceiling = (float(t) for t in temperature_bounds)
        if not 0 < floor <= t_min <= t_max <= ceiling:
            raise ValueError(
                f"`temperature_bounds` {[floor, ceiling]} must contain `temperature_range` {[t_min, t_max]}."
            )
        self.temperature_range = [t_min, t_max]
        self.temperature_bounds = [floor, ceiling]
        self.target, self.rate, self.tolerance, self.signal = float(target), float(rate), float(tolerance), signal
        self.scale = 1.0
        self.updates = 0
        self.last_signal: float | None = None

    @classmethod
    def from_config(cls, args) -> LadderController:
        """The controller of a `GRPOExtConfig` with `temperature_control` on."""
        return cls(
            args.temperature_range,
            args.temperature_bounds,
            target=args.temperature_control_target,
            rate=args.temperature_control_rate,
            tolerance=args.temperature_control_tolerance,
            signal=args.temperature_control,
        )

    @property
    def scale_bounds(self) -> tuple[float, float]:
        """(t_floor / T_0^0, t_ceiling / T_{K-1}^0): the scales that keep the whole ladder inside the bounds."""
        (floor, ceiling), (t_min, t_max) = self.temperature_bounds, self.temperature_range
        return floor / t_min, ceiling / t_max

    def apply(self, ladder: Sequence[float]) -> list[float]:
        """The configured ladder at the current scale, c_n * T_i^0, clamped to the bounds against rounding."""
        floor, ceiling = self.temperature_bounds
        return [round(min(max(self.scale * t, floor), ceiling), 12) for t in ladder]

    def update(self, signal: float) -> float:
        """Move the scale by one step of `next_scale` for the measured `signal`; returns the new scale."""
        self.scale = next_scale(
            self.scale, signal, target=self.target, rate=self.rate, tolerance=self.tolerance, bounds=self.scale_bounds
        )
        self.updates += 1
        self.last_signal = float(signal) if math.isfinite(signal) else None
        return self.scale

    def settings(self) -> dict:
        """The settings that define the law (the constructor's arguments): what a checkpoint records with the scale."""
        return {
            "temperature_range": list(self.temperature_range),
            "temperature_bounds": list(self.temperature_bounds),
            "target": self.target,
            "rate": self.rate,
            "tolerance": self.tolerance,
            "signal": self.signal,
        }

    # Checkpoints: transformers writes `state()` into trainer_state.json's `stateful_callbacks` with every checkpoint.
    def state(self) -> dict:
        return {
            "args": self.settings(),
            "attributes": {"scale": self.scale, "updates": self.updates, "last_signal": self.last_signal},
        }

    def on_train_begin(self, args, state, control, **kwargs):
        """Take the scale from the state being trained from: a resumed checkpoint's, or this object's own.

        The settings are this run's: those of `args` when it is a config with `temperature_control` on (transformers'
        `restore_callback_states_from_checkpoint` rebuilds the controller with the checkpoint's settings; they are
        replaced here), else this object's. A checkpoint saved with the same settings is restored exactly; one saved
        with other settings gives its scale clipped into this run's `scale_bounds`, and a warning names the changes.
        """
        if getattr(args, "temperature_control", "none") in CONTROL_SIGNALS[1:]:
            current = type(self).from_config(args).settings()
            if current != self.settings():
                self.__init__(**current)
        name = type(self).__name__
        saved = state.stateful_callbacks.get(name)
        if isinstance(saved, list):
            saved = saved[0] if saved else None
        if not saved:  # a checkpoint written without the controller: transformers' save expects the entry to exist
            state.stateful_callbacks[name] = self.state()
            return
        for attribute, value in saved.get("attributes", {}).items():
            setattr(self, attribute, value)
        recorded = saved.get("args")
        current = self.settings()
        if recorded is not None and {key: recorded.get(key) for key in current} == current:
            return
        lo, hi = self.scale_bounds
        saved_scale, self.scale = self.scale, min(max(float(self.scale), lo), hi)
        if recorded is None:
            changed = "the checkpoint records no settings"
        else:
            changed = ", ".join(
                f"{key} {recorded.get(key)} -> {value}" for key, value in current.items() if recorded.get(key) != value
            )
        warnings.warn(
            f"{name}: the checkpoint's controller was saved with other settings ({changed}); training continues with "
            f"this run's settings, and the saved scale {saved_scale:.6g} is clipped into the scale bounds "
            f"[{lo:.6g}, {hi:.6g}] of this run's range and bounds: {self.scale:.6g}.",
            UserWarning,
            stacklevel=2,
        )
