"""`python -m trl_grpo_ext.demos ...`: the same as `trl-grpo-ext demo ...`."""

from . import main

if __name__ == "__main__":
    raise SystemExit(main())
