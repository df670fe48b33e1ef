"""Moved to `trl_grpo_ext.kit.tasks` (the offline model kit); this name stays an alias of it."""

import sys

from .kit import tasks as _module

sys.modules[__name__] = _module
