"""The README's drop-in example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_drop_in_example_trains(tmp_path, monkeypatch):
    section = README.read_text().split("## Drop-in example", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12, "the README promises a short drop-in example"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == 2
    logged = {k for entry in trainer.state.log_history for k in entry}
    for key in ("rewards/accuracy/mean", "rewards/readability/mean", "ladder/t_min", "advantages/abs_max"):
        assert key in logged, key
    ladder_min = [e["ladder/t_min"] for e in trainer.state.log_history if "ladder/t_min" in e]
    assert ladder_min and all(abs(v - 0.7) < 1e-9 for v in ladder_min)
