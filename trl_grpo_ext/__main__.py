"""`python -m trl_grpo_ext ...`: the `trl-grpo-ext` command line."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
