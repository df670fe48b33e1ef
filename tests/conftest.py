"""Shared fixtures. Nothing here touches the Hub: the tiny kit builds every model locally."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402

from tests.helpers import tiny_tokenizer_cached  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer_cached()


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path_factory, monkeypatch):
    """Tiny models materialised by `tiny:` names go to a per-session temporary cache."""
    monkeypatch.setenv("TRL_GRPO_EXT_CACHE", str(tmp_path_factory.getbasetemp() / "tiny-cache"))
