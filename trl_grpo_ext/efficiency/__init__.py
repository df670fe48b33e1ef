"""Same math, less compute: each group's prompt computed once (`share_prompt`), rows with zero advantage skipped
(`skip_zero_advantage`). Pure functions; the trainer wires them into TRL's log-prob forward and `generate`."""

from .checks import check_efficiency_options
from .shared_prompt import (
    backbone_of,
    cache_keyword,
    prefix_cache,
    prompt_groups,
    prompt_positions_saved,
    shared_prefill_generation,
    shared_prompt_log_probs,
)
from .zero_advantage import fill_rows, rows_with_signal, skipped_rows_stats

__all__ = [
    "backbone_of",
    "check_efficiency_options",
    "cache_keyword",
    "fill_rows",
    "prefix_cache",
    "prompt_groups",
    "prompt_positions_saved",
    "rows_with_signal",
    "shared_prefill_generation",
    "shared_prompt_log_probs",
    "skipped_rows_stats",
]
