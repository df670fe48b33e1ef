"""`python -m trl_grpo_ext.bench ...`: the same as `trl-grpo-ext bench ...`."""

from . import main

if __name__ == "__main__":
    raise SystemExit(main())
