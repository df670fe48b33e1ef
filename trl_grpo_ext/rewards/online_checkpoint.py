"""The online reward model's state files in a checkpoint: `checkpoint-N/online_rm/{name}/`.

`trainer_state.json` only takes JSON, so the reward model's weights (`model.safetensors`), its optimizer's tensors
(`optimizer.safetensors`) and the rest (`state.json`: counters, RNG, buffers, the optimizer's other state, the
labeler's state, the settings) are written here. A state is written into a temporary sibling folder and renamed into
place once complete (`save_atomically`): the folder holds a whole state or none.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["STATE_DIR", "read_state", "save_atomically", "write_state"]

STATE_DIR = "online_rm"


def save_atomically(directory: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """`write(folder)` into a temporary sibling folder, renamed to `directory` once complete (a previous one is
    replaced); leftovers of an interrupted write are removed first, and a failed write leaves nothing."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{directory.name}.tmp-"
    for leftover in directory.parent.iterdir():
        if leftover.name.startswith(prefix):
            shutil.rmtree(leftover, ignore_errors=True)
    partial = directory.parent / f"{prefix}{os.getpid()}"
    partial.mkdir()
    try:
        write(partial)
        if directory.exists():
            shutil.rmtree(directory)
        partial.rename(directory)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def write_state(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, payload: dict) -> None:
    """The weights, the optimizer's tensors, and `payload` (JSON) with the optimizer's other state as `"optimizer"`
    (in `payload`'s place for that key when it has one)."""
    from safetensors.torch import save_file, save_model

    save_model(model, str(directory / "model.safetensors"))
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    save_file(tensors, str(directory / "optimizer.safetensors"))
    payload = {**payload, "optimizer": {"param_groups": state["param_groups"], "scalars": scalars}}
    (directory / "state.json").write_text(json.dumps(payload, default=list))


def read_state(
    directory: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: Any
) -> dict[str, Any]:
    """Load what `write_state` wrote into `model` and `optimizer` (on `device`); returns the payload."""
    from safetensors.torch import load_file, load_model

    directory = Path(directory)
    payload = json.loads((directory / "state.json").read_text())
    load_model(model, str(directory / "model.safetensors"), device=str(device))
    tensors = load_file(str(directory / "optimizer.safetensors"), device=str(device))
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *payload["optimizer"]["scalars"].items()]:
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = value
    for entry in state.values():
        if "step" in entry and torch.is_tensor(entry["step"]):
            entry["step"] = entry["step"].cpu()  # AdamW keeps `step` on the CPU unless capturable/fused
    groups = payload["optimizer"]["param_groups"]
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return payload
