"""The HTTP judge's API key: read from the environment without its trailing newline, refused with a control
character inside, never shown in errors, logs or echoed error bodies (docs/reliability.md, "Hardening 2", item 2)."""

from __future__ import annotations

import logging
import warnings

import pytest

from tests.helpers import everything_shown
from tests.judge_server import FakeJudgeServer
from trl_grpo_ext.rewards import ObjectiveError, OpenAIJudge, PrinciplesObjective, guard_objective
from trl_grpo_ext.rewards.judges import DEFAULT_TEMPLATE

SECRET = "sk-hardening2-0123456789abcdef"


# ------------------------------------------------------------------------------------ 2. the judge's API key
@pytest.fixture
def server():
    with FakeJudgeServer() as running:
        yield running


def _prompt(p):
    return DEFAULT_TEMPLATE.format(prompt="q", completion=str(p), principle="Is it good?")


def _judge(server, **kwargs):
    return OpenAIJudge(**{"base_url": server.url, "model": "fake", "backoff": 0.01, "timeout": 5.0, **kwargs})


def test_api_key_read_with_a_trailing_newline_is_sent_without_it(server, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET + "\n")  # a key read from a file or a mounted secret
    judge = _judge(server, api_key_env="JUDGE_TEST_KEY", max_retries=0)
    assert judge.score([_prompt(0.3)]) == pytest.approx([0.3])
    assert server.requests[0][2]["Authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("bad", ["\nsuffix", "\x1bx", "\u00e9t\u00e9"])
def test_api_key_with_an_inner_control_character_is_refused_without_echo(monkeypatch, bad):
    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET + bad)
    with pytest.raises(ValueError) as info:
        OpenAIJudge("http://127.0.0.1:9/v1", "m", api_key_env="JUDGE_TEST_KEY")
    message = str(info.value)
    assert "`judge.api_key_env`" in message and "'JUDGE_TEST_KEY'" in message and "printable ASCII" in message
    assert SECRET not in message and "sk-" not in message and bad.strip() not in message


def _score_guarded(judge, policy: str, caplog):
    """Score two completions through the guard under `policy`; returns (raised exception or None, the message)."""
    guarded = guard_objective("judged", PrinciplesObjective(["Is it good?"], judge, name="judged"), policy)
    if policy == "raise":
        with pytest.raises(ObjectiveError) as info:
            guarded(["q", "q"], ["0.5", "0.6"])
        return info.value, str(info.value)
    assert guarded(["q", "q"], ["0.5", "0.6"], log_metric=lambda k, v: None) == [None, None]
    return None, "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("trl_grpo_ext"))


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_a_key_read_with_a_newline_never_shows_in_errors_or_logs(server, monkeypatch, caplog, policy):
    """The key file's newline, and a server that refuses the key: every exception (chained ones included), log
    record (every logger, DEBUG up) and warning is scanned for the key, under both reward error policies."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET + "\n")
    server.default = "401"
    judge = _judge(server, api_key_env="JUDGE_TEST_KEY", max_retries=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raised, message = _score_guarded(judge, policy, caplog)
    assert "HTTP 401" in message and judge.url in message, message  # the server's answer, not a transport error
    shown = everything_shown(raised, caplog, caught)
    assert SECRET not in shown and "Bearer" not in shown
    assert len(server.requests) == 1 and server.requests[0][2]["Authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_a_request_that_cannot_be_sent_names_the_error_class_and_is_not_retried(server, monkeypatch, caplog, policy):
    """httpx refuses a header value (a key whose control character got past the read): the request fails at once,
    naming the error's class and the URL; nothing this package raises, logs or warns holds the key."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET)
    judge = _judge(server, api_key_env="JUDGE_TEST_KEY", max_retries=3)
    judge._api_key = SECRET + "\n"  # what the old read kept from a key file
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raised, message = _score_guarded(judge, policy, caplog)
    assert "LocalProtocolError" in message and judge.url in message, message
    # httpcore's own DEBUG trace repeats the refused header; everything of this package is scanned.
    caplog.records[:] = [r for r in caplog.records if not r.name.startswith("httpcore")]
    shown = everything_shown(raised, caplog, caught)
    assert SECRET not in shown and "Bearer" not in shown
    assert judge.retries == 0 and server.requests == []  # a request that cannot be sent is not retried


def test_error_body_that_echoes_the_key_is_redacted(monkeypatch):
    """A proxy that echoes the request's headers in its error page: the snippet in the error hides the key."""
    from trl_grpo_ext.rewards.judges import http

    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET)
    judge = OpenAIJudge("http://judge.invalid/v1", "m", api_key_env="JUDGE_TEST_KEY", max_retries=0)

    def echo(request):
        return http.httpx.Response(401, text=f"denied: Authorization: {request.headers['Authorization']}")

    headers = {"Authorization": f"Bearer {SECRET}"}
    judge._client = http.httpx.Client(transport=http.httpx.MockTransport(echo), headers=headers)
    (error,) = judge.score(["x"])
    assert "HTTP 401" in str(error) and "denied: Authorization: Bearer ***" in str(error)
    assert SECRET not in str(error)
