"""The HTTP judge's limits against a misbehaving endpoint (a real server on 127.0.0.1, tests/judge_server.py).

A deadline per attempt that covers the whole exchange, a cap on the answer's size, credentials kept out of the URL and
out of every message (escaped echoes included), an `api_key_env` that holds a key refused without echoing it, and a
non-finite log-prob treated as a broken answer that is not cached.
"""

from __future__ import annotations

import logging
import time
import tracemalloc
import warnings

import pytest

from tests.helpers import everything_shown, tiny_kwargs
from tests.judge_server import FakeJudgeServer
from trl_grpo_ext import GRPOExtConfig
from trl_grpo_ext.rewards import (
    Judge,
    JudgeError,
    ObjectiveError,
    OpenAIJudge,
    PrinciplesObjective,
    guard_objective,
)
from trl_grpo_ext.rewards.judges import DEFAULT_TEMPLATE, check_judge_config

MiB = 2**20


@pytest.fixture
def server():
    with FakeJudgeServer() as running:
        yield running


def _prompt(p):
    return DEFAULT_TEMPLATE.format(prompt="q", completion=str(p), principle="Is it good?")


def _judge(server, **kwargs):
    return OpenAIJudge(**{"base_url": server.url, "model": "fake", "backoff": 0.01, "timeout": 5.0, **kwargs})


def _config_error(tmp_path, judge: dict) -> str:
    """The message of the ValueError that GRPOExtConfig raises for a `judge` block, as a recipe would give it."""
    kwargs = tiny_kwargs(tmp_path, reward_objectives={"principles": 1.0}, principles=["Is it good?"], judge=judge)
    with pytest.raises(ValueError) as info:
        GRPOExtConfig(**kwargs)
    return str(info.value)


# ------------------------------------------------------------------------------------------------ deadline
@pytest.mark.parametrize("fault", ["drip", "drip_headers"])
def test_an_answer_that_drips_fails_at_the_deadline(server, fault):
    """One byte every 0.2 s keeps every read under the 1 s timeout; the attempt still ends after 1 s in all."""
    server.default, server.drip_s, server.drip_bytes = fault, 0.2, 15  # 3 s of dripping, then the whole answer
    judge = _judge(server, timeout=1, max_retries=0)
    start = time.perf_counter()
    (error,) = judge.score([_prompt(0.3)])
    elapsed = time.perf_counter() - start
    assert isinstance(error, JudgeError) and "timed out after 1 s" in str(error), error
    assert elapsed < 2.0, elapsed


def test_each_retry_of_a_dripping_answer_has_its_own_deadline(server):
    server.default, server.drip_s, server.drip_bytes = "drip", 0.2, 15
    judge = _judge(server, timeout=0.5, max_retries=2)
    start = time.perf_counter()
    (error,) = judge.score([_prompt(0.3)])
    elapsed = time.perf_counter() - start
    assert isinstance(error, JudgeError) and "failed after 3 attempt(s): timed out after 0.5 s" in str(error), error
    assert len(server.requests) == 3 and elapsed < 3 * 0.5 + 0.03 + 1.0, elapsed


def test_an_answer_that_drips_within_the_deadline_is_scored(server):
    server.default, server.drip_s, server.drip_bytes = "drip", 0.05, 4
    assert _judge(server, timeout=2, max_retries=0).score([_prompt(0.3)]) == pytest.approx([0.3])
    server.default = "drip_headers"
    assert _judge(server, timeout=2, max_retries=0).score([_prompt(0.7)]) == pytest.approx([0.7])


# ------------------------------------------------------------------------------------------------ size cap
@pytest.mark.parametrize("fault", ["huge", "huge_unsized"])
def test_an_answer_larger_than_the_cap_is_refused_without_reading_it(server, fault):
    """64 MiB answered, with and without a Content-Length: refused past 1 MiB, not retried, memory stays small."""
    server.default = fault
    judge = _judge(server, max_response_bytes=MiB, max_retries=2)
    tracemalloc.start()
    try:
        start = time.perf_counter()
        (error,) = judge.score([_prompt(0.3)])
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error, JudgeError), error
    assert f"more than {MiB} bytes" in str(error) and "`max_response_bytes`" in str(error), error
    assert len(server.requests) == 1 and judge.retries == 0  # a broken answer is not asked for again
    time.sleep(0.2)  # the server notices the closed connection
    assert server.served < server.huge_bytes // 2, server.served
    assert peak < 8 * MiB and elapsed < 5.0, (peak, elapsed)


def test_the_default_cap_is_16_mib(server):
    server.default = "huge_unsized"
    judge = _judge(server, max_retries=0)
    assert judge.max_response_bytes == 16 * MiB
    tracemalloc.start()
    try:
        (error,) = judge.score([_prompt(0.3)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error, JudgeError) and f"more than {16 * MiB} bytes" in str(error), error
    time.sleep(0.2)
    assert server.served < server.huge_bytes // 2 and peak < 48 * MiB, (server.served, peak)


def test_the_cap_is_a_judge_setting():
    base = {"base_url": "http://127.0.0.1:8000/v1", "model": "m"}
    assert check_judge_config(base)["max_response_bytes"] == 16 * MiB
    assert check_judge_config({**base, "max_response_bytes": 1024})["max_response_bytes"] == 1024
    with pytest.raises(ValueError, match=r"`judge.max_response_bytes` must be an integer >= 1, got 0"):
        check_judge_config({**base, "max_response_bytes": 0})


# ------------------------------------------------------------------------------------------------ credentials
PASSWORD = "Pa55w0rdZq81"


@pytest.mark.parametrize(
    "userinfo", [f"judge:{PASSWORD}@", f"{PASSWORD}@", f"judge:{PASSWORD}%40x@", f"judge:{PASSWORD}@evil@"]
)
def test_credentials_in_base_url_are_refused_without_showing_them(server, userinfo, tmp_path):
    """Constructor, judge block and GRPOExtConfig all refuse the URL, name the fix, and never show the password."""
    url = server.url.replace("http://", f"http://{userinfo}")
    messages = []
    for make in (
        lambda: OpenAIJudge(url, "fake"),
        lambda: check_judge_config({"base_url": url, "model": "fake"}),
        lambda: PrinciplesObjective(["Is it good?"], {"base_url": url, "model": "fake"}),
    ):
        with pytest.raises(ValueError) as info:
            make()
        messages.append(str(info.value))
    messages.append(_config_error(tmp_path, {"base_url": url, "model": "fake"}))
    for message in messages:
        assert "`judge.base_url`" in message and "api_key_env" in message and "environment variable" in message
        assert PASSWORD not in message and "judge:" not in message, message
    assert server.requests == []


SECRET_PIECES = ["sk", "k3yAlpha", "k3yBravo", "k3yCharlie", "k3yDelta", "k3yEcho", "k3yFoxtrot", "k3yGolf"]
SECRET = SECRET_PIECES[0] + '-"' + "\\".join(SECRET_PIECES[1:3]) + "<&" + SECRET_PIECES[3] + "'/"
SECRET += SECRET_PIECES[4] + " >" + SECRET_PIECES[5] + "+%" + SECRET_PIECES[6] + "=" + SECRET_PIECES[7]


@pytest.mark.parametrize("fault", ["echo_json", "echo_html", "echo_url", "echo_body", "echo_answer"])
@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_a_key_echoed_escaped_by_the_server_is_hidden(server, monkeypatch, caplog, fault, policy):
    """A key holding `"`, `\\`, `<`, `&`, `'`, `/`, ` `, `+`, `%`, `=` echoed JSON-, HTML- or URL-escaped, or in a
    Python repr: no part of it shows in anything raised, logged or warned, under both reward error policies."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET)
    server.default = fault
    judge = _judge(server, api_key_env="JUDGE_TEST_KEY", max_retries=0)
    guarded = guard_objective("judged", PrinciplesObjective(["Is it good?"], judge, name="judged"), policy)
    raised = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if policy == "raise":
            with pytest.raises(ObjectiveError) as info:
                guarded(["q"], ["0.5"])
            raised = info.value
        else:
            assert guarded(["q"], ["0.5"], log_metric=lambda k, v: None) == [None]
    assert server.requests[0][2]["Authorization"] == f"Bearer {SECRET}"
    caplog.records[:] = [r for r in caplog.records if not r.name.startswith(("httpcore", "httpx"))]
    shown = everything_shown(raised, caplog, caught)
    assert "***" in shown and judge.url in shown, shown
    leaked = [piece for piece in SECRET_PIECES[1:] if piece.lower() in shown.lower()]
    assert not leaked, shown


@pytest.mark.parametrize("value", ["sk-proj-Zq81Xw27Lm44Tt90", "Bearer Zq81Xw27Lm44Tt90", "Zq81Xw27Lm44Tt90=="])
def test_a_key_pasted_into_api_key_env_is_refused_without_echo(server, value, tmp_path):
    messages = []
    for make in (
        lambda: OpenAIJudge(server.url, "fake", api_key_env=value),
        lambda: check_judge_config({"base_url": server.url, "model": "fake", "api_key_env": value}),
    ):
        with pytest.raises(ValueError) as info:
            make()
        messages.append(str(info.value))
    messages.append(_config_error(tmp_path, {"base_url": server.url, "model": "fake", "api_key_env": value}))
    for message in messages:
        assert "`judge.api_key_env`" in message and f"{len(value)}-character" in message, message
        assert "Zq81" not in message and "Xw27" not in message and "Tt90" not in message, message
    assert server.requests == []


# ------------------------------------------------------------------------------------------------ non-finite answers
@pytest.mark.parametrize("fault", ["inf", "-inf", "nan", "1e999", "10**400"])
def test_a_non_finite_log_prob_is_a_fault_and_not_cached(server, fault):
    server.faults = [fault]
    judge = _judge(server, max_retries=3)
    (error,) = judge.score([_prompt(0.3)])
    assert isinstance(error, JudgeError), error
    assert "not a finite number" in str(error) or "log-probs that are not numbers" in str(error), error
    assert len(server.requests) == 1  # a broken answer is not retried
    assert judge.score([_prompt(0.3)]) == pytest.approx([0.3])  # the next call asks the server again
    assert len(server.requests) == 2


def test_a_non_finite_log_prob_is_handled_by_the_fault_policy(server):
    server.faults = ["inf"]
    guarded = guard_objective("judged", PrinciplesObjective(["Is it good?"], _judge(server), name="judged"), "skip")
    logged = []
    assert guarded(["q", "q"], ["0.5", "0.6"], log_metric=lambda k, v: logged.append((k, v))) == [None, None]
    assert ("rewards/judged/errors", 2.0) in logged


class _NumberJudge(Judge):
    """A judge whose model answers the numbers of a list, one per call (a broken local model answers NaN)."""

    def __init__(self, answers):
        super().__init__()
        self.answers = list(answers)

    def _cache_key(self, text):
        return text

    def _score_uncached(self, texts):
        return [self.answers.pop(0) for _ in texts]


def test_a_score_that_is_not_a_probability_is_a_fault_and_not_cached():
    judge = _NumberJudge([float("nan"), float("inf"), 1.5, 0.25])
    for _ in range(3):
        (error,) = judge.score(["x"])
        assert isinstance(error, JudgeError) and "not a probability" in str(error), error
    assert judge.score(["x"]) == [0.25] and judge.calls == 4
    assert judge.score(["x"]) == [0.25] and judge.calls == 4  # a score in [0, 1] is cached
