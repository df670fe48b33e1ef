"""`python -m trl_grpo_ext.experiment ...`: the same as `trl-grpo-ext experiment ...`."""

from . import main

if __name__ == "__main__":
    raise SystemExit(main())
