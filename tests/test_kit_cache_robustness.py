"""The kit's cache under hostile names, damaged entries, killed builds and concurrent resolvers.

Kit names are checked against the kit's own models before any path is made from them; an entry without its
`config.json` is rebuilt; build directories whose process is gone are swept; a file where the cache or an entry
should be is named in the error; threads and processes resolving one fresh name at once share one complete copy.
"""

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from trl_grpo_ext import kit
from trl_grpo_ext.kit.tiny import build_tiny_model


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """A fresh, empty kit cache one level below `tmp_path`, so anything escaping it is visible in `tmp_path`."""
    root = tmp_path / "cache"
    monkeypatch.setenv("TRL_GRPO_EXT_CACHE", str(root))
    return root


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ------------------------------------------------------------------------------------------- names before paths
@pytest.mark.parametrize(
    "name",
    [
        "tiny:x/../../escaped/dir",
        "tiny:/etc/passwd",
        "tiny:..",
        "tiny:small/../tiny",
        "tiny:huge",
        "tiny:small@-1",
        "tiny:small@3x",
        "tiny:small@",
        "tiny:small@\u0663",  # an Arabic-Indic digit: str.isdigit() says yes, int() reads it, the kit does not
        "tiny:small@18446744073709551616",  # past torch's seed range
        "tiny: small",
        "smollm2:../../escaped",
        "smollm2:135m-instruct/../x",
    ],
)
def test_invalid_kit_names_are_refused_before_touching_the_disk(cache, tmp_path, name):
    with pytest.raises(ValueError, match=re.escape(name)) as err:
        kit.resolve_model_path(name)
    allowed = ["'small'", "'tiny'", "'50m'"] if name.startswith("tiny:") else ["'135m-instruct'"]
    assert all(a in str(err.value) for a in allowed), str(err.value)
    assert _tree(tmp_path) == []  # no cache directory, no litter, nothing outside


def test_traversal_name_does_not_resolve_to_a_directory_outside_the_cache(cache, tmp_path):
    """With `cache/tiny-x` present, `tiny:x/../../outside/other` used to name `tmp_path/outside/other-seed0`."""
    (cache / "tiny-x").mkdir(parents=True)
    outside = tmp_path / "outside" / "other-seed0"
    outside.mkdir(parents=True)
    (outside / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="tiny:x/../../outside/other"):
        kit.resolve_model_path("tiny:x/../../outside/other")


def test_near_miss_names_get_a_suggestion(cache):
    with pytest.raises(ValueError, match=r"did you mean 'tiny:small@3'\?"):
        kit.resolve_model_path("tiny:smal@3")
    with pytest.raises(ValueError, match=r"did you mean 'smollm2:135m-instruct'\?"):
        kit.resolve_model_path("smollm2:135m-instruc")


def test_registered_builder_cache_name_must_be_one_plain_directory_name(cache, tmp_path, monkeypatch):
    built = []
    monkeypatch.setitem(kit.KIT_MODELS, "evil:", lambda spec: (f"../{spec}", built.append))
    with pytest.raises(ValueError, match=r"'evil:escaped'.*'\.\./escaped'"):
        kit.resolve_model_path("evil:escaped")
    assert built == [] and _tree(tmp_path) == []


def test_valid_names_still_resolve(cache):
    assert kit.resolve_model_path("tiny:") == str(cache / "tiny-tiny-seed0")
    assert kit.resolve_model_path("tiny:tiny@7") == str(cache / "tiny-tiny-seed7")
    assert (cache / "tiny-tiny-seed7" / "reward" / "config.json").is_file()
    (cache / "plain").mkdir()
    assert (cache / "tiny-tiny-seed7").stat().st_mode == (cache / "plain").stat().st_mode  # readable as any mkdir's


# ------------------------------------------------------------------------------------------- damaged entries
def test_entry_without_config_is_rebuilt(cache):
    """A directory left without its `config.json` (a crash, a partial copy, a hand edit) used to fail forever."""
    entry = cache / "tiny-tiny-seed0"
    entry.mkdir(parents=True)
    (entry / "model.safetensors").write_bytes(b"truncated")
    (entry / "reward").mkdir()
    assert kit.resolve_model_path("tiny:tiny") == str(entry)
    assert (entry / "config.json").is_file() and (entry / "reward" / "config.json").is_file()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(entry)
    reference = build_tiny_model(seed=0)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())
    assert sorted(p.name for p in cache.iterdir()) == ["tiny-tiny-seed0"]  # the damaged copy is gone


def test_empty_entry_is_rebuilt(cache):
    (cache / "tiny-tiny-seed0").mkdir(parents=True)
    assert (Path(kit.resolve_model_path("tiny:tiny")) / "config.json").is_file()


# ------------------------------------------------------------------------------------------- killed builds
def test_build_directories_of_dead_or_old_processes_are_swept(cache):
    cache.mkdir()
    complete = cache / "tiny-tiny-seed0"
    kit.resolve_model_path("tiny:tiny")  # a cached entry: the sweep runs on cache hits too
    dead, host = _dead_pid(), socket.gethostname()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = sleeper.pid
        names = {
            f"smollm2-135m-instruct-q4_1.tmp{dead}": "gone",  # the old format, from a killed conversion
            f"tiny-small-seed0.tmp{dead}@{host}+0abc12": "gone",
            f"tiny-small-seed0.tmp{live}@{host}+0abc12": "kept",  # a live build
            f"tiny-small-seed1.tmp{live}@{host}+01d999": "gone",  # live pid, but a day old: a reused pid
            f"tiny-small-seed0.tmp{dead}@another-node+0abc12": "kept",  # another machine's pids mean nothing here
            f"tiny-small-seed1.tmp{dead}@another-node+01d999": "gone",
            "my-notes.tmp": "kept",  # not a build directory of the kit
        }
        for name in names:
            (cache / name).mkdir()
            (cache / name / "model.safetensors").write_bytes(b"x" * 1000)
            if "01d999" in name:
                day_ago = time.time() - 24 * 3600
                os.utime(cache / name, (day_ago, day_ago))
        assert kit.resolve_model_path("tiny:tiny") == str(complete)
        left = sorted(p.name for p in cache.iterdir())
        assert left == sorted([complete.name] + [n for n, fate in names.items() if fate == "kept"])
    finally:
        sleeper.kill()
        sleeper.wait()


# ------------------------------------------------------------------------------------------- files in the way
def test_cache_root_that_is_a_file_is_named_in_the_error(cache):
    cache.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match=rf"{cache}.*is a file.*TRL_GRPO_EXT_CACHE"):
        kit.resolve_model_path("tiny:tiny")
    assert cache.read_text() == "not a directory"


def test_cache_root_below_a_file_is_named_in_the_error(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_GRPO_EXT_CACHE", str(cache / "below"))
    cache.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match=rf"{cache / 'below'}.*{cache} is a file"):
        kit.resolve_model_path("tiny:tiny")


def test_cache_entry_that_is_a_file_is_named_in_the_error(cache):
    cache.mkdir()
    entry = cache / "tiny-tiny-seed0"
    entry.write_text("someone's file")
    with pytest.raises(NotADirectoryError, match=rf"{entry} is a file"):
        kit.resolve_model_path("tiny:tiny")
    assert entry.read_text() == "someone's file"
    assert sorted(p.name for p in cache.iterdir()) == ["tiny-tiny-seed0"]  # no build left behind


# ------------------------------------------------------------------------------------------- concurrent resolvers
def _resolve_in_threads(name: str, count: int) -> tuple[list[str], list[BaseException]]:
    """`count` threads released together by a barrier, each resolving `name`: (their paths, their errors)."""
    barrier = threading.Barrier(count)
    results, errors = [], []

    def resolve():
        barrier.wait()
        try:
            results.append(kit.resolve_model_path(name))
        except BaseException as err:  # noqa: BLE001 - returned to the test, which shows it
            errors.append(err)

    threads = [threading.Thread(target=resolve) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results, errors


@pytest.mark.parametrize("trial", range(3))
def test_threads_resolving_one_fresh_name_share_one_complete_copy(cache, trial):
    """Threads of one process used to share one build directory: torn safetensors, half-written renames."""
    from transformers import AutoModelForCausalLM

    results, errors = _resolve_in_threads(f"tiny:tiny@{trial}", 6)
    assert errors == [] and len(results) == 6, errors
    assert set(results) == {str(cache / f"tiny-tiny-seed{trial}")}
    assert sorted(p.name for p in cache.iterdir()) == [f"tiny-tiny-seed{trial}"]  # no build directory left
    model = AutoModelForCausalLM.from_pretrained(results[0])
    reference = build_tiny_model(seed=trial).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


def test_threads_replacing_one_damaged_entry_share_one_complete_copy(cache):
    entry = cache / "tiny-small-seed2"
    entry.mkdir(parents=True)
    (entry / "model.safetensors").write_bytes(b"truncated")
    results, errors = _resolve_in_threads("tiny:small@2", 6)
    assert errors == [] and results == [str(entry)] * 6, errors
    assert sorted(p.name for p in cache.iterdir()) == [entry.name]
    assert (entry / "config.json").is_file() and (entry / "reward" / "model.safetensors").is_file()


_CHILD = """
import sys, time
from pathlib import Path
from trl_grpo_ext.kit import resolve_model_path
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.01)
print(resolve_model_path("tiny:small@5"))
"""


def test_two_processes_resolving_one_fresh_name_share_one_complete_copy(tmp_path):
    root, go = tmp_path / "cache", tmp_path / "go"
    env = {**os.environ, "TRL_GRPO_EXT_CACHE": str(root)}
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    children = [
        subprocess.Popen([sys.executable, "-c", _CHILD, str(r), str(go)], env=env, stdout=subprocess.PIPE, text=True)
        for r in ready
    ]
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()  # both imported: they start resolving at the same moment
    outputs = [child.communicate(timeout=180)[0].strip() for child in children]
    assert [child.returncode for child in children] == [0, 0]
    assert outputs == [str(root / "tiny-small-seed5")] * 2
    assert sorted(p.name for p in root.iterdir()) == ["tiny-small-seed5"]
    assert (root / "tiny-small-seed5" / "model.safetensors").is_file()
