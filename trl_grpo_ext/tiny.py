"""Moved to `trl_grpo_ext.kit.tiny` (the offline model kit); this name stays an alias of it."""

import sys

from .kit import tiny as _module

sys.modules[__name__] = _module
