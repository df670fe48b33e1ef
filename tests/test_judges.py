"""Judges and the principles objective: the yes-probability, the local judge on the tiny kit, the HTTP judge against a
fault-injecting server on 127.0.0.1, the fault policy, and the docstring examples.

The real-server test (a `vllm serve` process) is tests/vllm/test_judge_vllm_serve.py.
"""

import doctest
import math
import pickle
import re
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.judge_server import FakeJudgeServer
from trl_grpo_ext.rewards import (
    Judge,
    JudgeError,
    LocalJudge,
    ObjectiveError,
    OpenAIJudge,
    PrinciplesObjective,
    guard_objective,
)
from trl_grpo_ext.rewards import judges as judges_module
from trl_grpo_ext.rewards import principles as principles_module
from trl_grpo_ext.rewards.judges import DEFAULT_TEMPLATE, base, local, yes_probability
from trl_grpo_ext.rewards.judges import config as judge_config_module


class _FencedDocTestParser(doctest.DocTestParser):
    def parse(self, string, name="<string>"):
        return super().parse(re.sub(r"^[ \t]*```.*$", "", string, flags=re.MULTILINE), name)


@pytest.mark.parametrize("module", [base, judges_module, judge_config_module, principles_module, local])
def test_docstring_examples_are_exact(module):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder(parser=_FencedDocTestParser()).find(module, module.__name__):
        runner.run(test)
    assert runner.summarize(verbose=False).attempted >= 2
    assert runner.failures == 0


def test_the_judges_take_their_defaults_from_the_config_block():
    # One set of defaults: `LocalJudge(...)`, `OpenAIJudge(...)` and the `judge` block of a config.
    import inspect

    from trl_grpo_ext.rewards.judges import LocalJudgeConfig, OpenAIJudgeConfig, check_judge_config

    for judge, block in ((LocalJudge, {"model": "m"}), (OpenAIJudge, {"base_url": "http://h/v1", "model": "m"})):
        defaults = {
            name: p.default
            for name, p in inspect.signature(judge).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        completed = check_judge_config(block)
        assert defaults == {k: v for k, v in completed.items() if k in defaults}, judge
        assert set(completed) - set(defaults) == {"kind", "template", *block}, judge
    assert inspect.signature(LocalJudge).parameters["batch_size"].default == LocalJudgeConfig.batch_size == 16
    assert inspect.signature(OpenAIJudge).parameters["max_response_bytes"].default == 16 * 2**20
    assert OpenAIJudgeConfig.timeout == 60.0


# ------------------------------------------------------------------------------------------------ P(yes)
def test_yes_probability_golden():
    # 0.3 + 0.3 on yes tokens, 0.2 on no: 0.6 / 0.8 = 0.75, whatever else the distribution holds.
    top = {" Yes": math.log(0.3), "yes": math.log(0.3), " No": math.log(0.2), "The": math.log(0.2)}
    assert yes_probability(top) == pytest.approx(0.75, abs=1e-12)
    assert yes_probability({" yes": -1.0}) == 1.0
    assert yes_probability({"NO": -3.0}) == 0.0
    assert yes_probability({"Maybe": -0.1, "!": -2.0}) is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-30, 0), min_size=1, max_size=4),
    st.lists(st.floats(-30, 0), min_size=1, max_size=4),
    st.floats(-50, 50),
)
def test_yes_probability_is_the_normalised_mass(yes_logps, no_logps, shift):
    pairs = [("y" if i % 2 else " Yes", lp) for i, lp in enumerate(yes_logps)]
    pairs += [("n" if i % 2 else " No", lp) for i, lp in enumerate(no_logps)]
    p_yes, p_no = sum(map(math.exp, yes_logps)), sum(map(math.exp, no_logps))
    assert yes_probability(pairs) == pytest.approx(p_yes / (p_yes + p_no), rel=1e-9, abs=1e-12)
    # A common shift of every log-prob (an unnormalised distribution) does not change it.
    shifted = yes_probability([(t, lp + shift) for t, lp in pairs])
    assert shifted == pytest.approx(p_yes / (p_yes + p_no), rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------------------------------------ local judge
TEXTS = [
    "Is 2+2=4? Answer:",
    "Request: say hi\n\nResponse: hello there\n\nQuestion: Is it polite?\nAnswer:",
    "x",
    "Does the response name a colour? Response: red. Answer:",
    "Q: {braces} are fine? A:",
]


def _reference_p_yes(model, tokenizer, text: str) -> float:
    """Unbatched, unpadded forward; yes tokens of the char-level kit are 'y'/'Y', no tokens 'n'/'N'."""
    ids = torch.tensor([tokenizer(text).input_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, -1].float(), dim=-1)
    yes = tokenizer.convert_tokens_to_ids(["y", "Y"])
    no = tokenizer.convert_tokens_to_ids(["n", "N"])
    return torch.sigmoid(torch.logsumexp(logprobs[yes], 0) - torch.logsumexp(logprobs[no], 0)).item()


def test_local_judge_equals_an_unbatched_forward(tokenizer):
    judge = LocalJudge("tiny:tiny", batch_size=2, cache_size=0)
    scores = judge.score(TEXTS)
    model, judge_tokenizer, yes_ids, no_ids = judge.load()
    assert sorted(judge_tokenizer.convert_ids_to_tokens(yes_ids.tolist())) == ["Y", "y"]
    assert sorted(judge_tokenizer.convert_ids_to_tokens(no_ids.tolist())) == ["N", "n"]
    assert not any(p.requires_grad for p in model.parameters())
    expected = [_reference_p_yes(model, judge_tokenizer, text) for text in TEXTS]
    assert scores == pytest.approx(expected, abs=1e-5)
    assert all(0.0 < s < 1.0 for s in scores)
    assert len(set(round(s, 6) for s in scores)) == len(TEXTS)  # the prompt matters
    assert judge.calls == len(TEXTS)


def test_local_judge_is_loaded_once_and_caches_identical_requests():
    first, second = LocalJudge("tiny:tiny"), LocalJudge("tiny:tiny", batch_size=1)
    assert first.load()[0] is second.load()[0]  # one model per process, device and dtype
    scores = first.score(["a", "b", "a"])
    assert (first.calls, first.cache_hits) == (2, 1) and scores[0] == scores[2]
    assert first.score(["b", "a"]) == [scores[1], scores[0]]
    assert (first.calls, first.cache_hits) == (2, 3)
    clone = pickle.loads(pickle.dumps(first))  # pickles its settings, not the model
    assert clone.score(["a"]) == pytest.approx([scores[0]], abs=1e-6) and clone.calls == 1


def test_local_chat_judge_applies_the_chat_template(tokenizer):
    chat = LocalJudge("tiny:tiny", chat=True).score(["Is it polite?"])
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Is it polite?"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == pytest.approx(LocalJudge("tiny:tiny").score([rendered]), abs=1e-6)


# ------------------------------------------------------------------------------------------------ objective
class _TableJudge(Judge):
    """P(yes) from a table keyed by (completion, question) substrings: pure, no model."""

    def __init__(self, table):
        super().__init__(cache_size=0)
        self.table = table

    def _cache_key(self, text):
        return text

    def _score_uncached(self, texts):
        out = []
        for text in texts:
            hits = [v for (c, q), v in self.table.items() if f"Response: {c}\n" in text and q in text]
            out.append(hits[0] if hits else JudgeError(f"no entry for {text!r}"))
        return out


def test_weighted_mean_over_principles_and_metrics():
    judge = _TableJudge({("A", "true"): 0.9, ("A", "kind"): 0.5, ("B", "true"): 0.2, ("B", "kind"): 1.0})
    objective = PrinciplesObjective(
        [{"question": "Is it true?", "weight": 3, "name": "true"}, {"question": "Is it kind?", "name": "kind"}],
        judge=judge,
    )
    logged = {}
    rewards = objective(["p", "p"], ["A", "B"], log_metric=lambda k, v: logged.setdefault(k, v))
    # (3 * 0.9 + 1 * 0.5) / 4 = 0.8 and (3 * 0.2 + 1 * 1.0) / 4 = 0.4
    assert rewards == pytest.approx([0.8, 0.4], abs=1e-12)
    assert logged["rewards/principles/true/mean"] == pytest.approx(0.55)
    assert logged["rewards/principles/kind/mean"] == pytest.approx(0.75)
    assert logged["rewards/principles/judge_calls"] == 4.0 and logged["rewards/principles/judge_seconds"] >= 0


def test_template_fills_prompt_completion_and_principle():
    seen = []

    class Recorder(_TableJudge):
        def _score_uncached(self, texts):
            seen.extend(texts)
            return [0.5] * len(texts)

    objective = PrinciplesObjective(["Is it short?"], Recorder({}), template="{principle}|{prompt}|{completion}")
    objective([[{"role": "user", "content": "hi"}]], [[{"role": "assistant", "content": "yo"}]])
    assert seen == ["Is it short?|user: hi|yo"]
    assert "{prompt}" in DEFAULT_TEMPLATE and "{completion}" in DEFAULT_TEMPLATE and "{principle}" in DEFAULT_TEMPLATE


# ------------------------------------------------------------------------------------------------ HTTP judge
def _prompt(p, question="Is it good?"):
    return DEFAULT_TEMPLATE.format(prompt="q", completion=str(p), principle=question)


@pytest.fixture
def server():
    with FakeJudgeServer() as running:
        yield running


def _judge(server, **kwargs):
    settings = dict(base_url=server.url, model="fake", backoff=0.01, timeout=5.0)
    settings.update(kwargs)
    return OpenAIJudge(**settings)


def test_http_judge_scores_batches_and_caches(server):
    judge = _judge(server, batch_size=4)
    values = [0.1, 0.25, 0.5, 0.7, 0.9, 0.95, 0.3, 0.8, 0.6, 0.05]
    scores = judge.score([_prompt(p) for p in values])
    assert scores == pytest.approx(values, abs=1e-9)  # the normalised yes mass, not the greedy text
    assert sorted(len(payload["prompt"]) for _, payload, _ in server.requests) == [2, 4, 4]  # concurrent
    _, payload, _ = server.requests[0]
    assert payload["logprobs"] == 20 and payload["max_tokens"] == 1 and payload["temperature"] == 0.0
    assert judge.score([_prompt(p) for p in values]) == scores  # identical requests: from the cache
    assert len(server.requests) == 3 and (judge.calls, judge.cache_hits) == (10, 10)
    assert _judge(server, top_logprobs=5).score([_prompt(0.1)]) and len(server.requests) == 4  # another request


def test_http_chat_endpoint(server):
    judge = _judge(server, chat=True)
    assert judge.score([_prompt(0.3), _prompt(0.6, "Is it not good?")]) == pytest.approx([0.3, 0.4], abs=1e-9)
    paths = {path for path, _, _ in server.requests}
    assert paths == {"/v1/chat/completions"} and len(server.requests) == 2
    assert server.requests[0][1]["logprobs"] is True and server.requests[0][1]["top_logprobs"] == 20


def test_http_retries_500_with_backoff(server):
    server.faults = ["500", "500"]
    judge = _judge(server, max_retries=2, backoff=0.05)
    start = time.perf_counter()
    assert judge.score([_prompt(0.4)]) == pytest.approx([0.4])
    assert judge.retries == 2 and len(server.requests) == 3
    assert time.perf_counter() - start >= 0.05 + 0.1  # waited backoff, then 2 x backoff


def test_http_gives_up_after_max_retries(server):
    server.default = "500"
    (error,) = _judge(server, max_retries=1).score([_prompt(0.4)])
    assert isinstance(error, JudgeError)
    assert "failed after 2 attempt(s): HTTP 500" in str(error) and len(server.requests) == 2


def test_http_timeout(server):
    server.default, server.slow_s = "timeout", 2.0
    start = time.perf_counter()
    (error,) = _judge(server, timeout=0.2, max_retries=1).score([_prompt(0.4)])
    assert isinstance(error, JudgeError) and "timed out after 0.2 s" in str(error), error
    assert time.perf_counter() - start < 1.5  # two attempts of 0.2 s, not the server's 2 s


def test_http_unreachable_server():
    (error,) = OpenAIJudge("http://127.0.0.1:9/v1", "m", max_retries=0, timeout=1).score(["x"])
    assert isinstance(error, JudgeError) and "cannot reach the server" in str(error)


@pytest.mark.parametrize(
    "fault, message",
    [
        ("garbage", "malformed JSON: <html>not json{"),
        ("wrong_count", "answered 2 choices for 3 prompts"),
        ("401", "HTTP 401"),
        ("rambling", "answered 'Perhaps', which is neither yes nor no, and it returned no log-probs"),
    ],
)
def test_http_garbage_fails_without_retry(server, fault, message):
    server.faults = [fault]
    scores = _judge(server, max_retries=3).score([_prompt(0.1), _prompt(0.2), _prompt(0.3)])
    assert all(isinstance(s, JudgeError) and message in str(s) for s in scores), scores
    assert len(server.requests) == 1  # a broken answer is not retried


def test_http_without_logprobs_parses_the_answer_strictly(server):
    server.default = "no_logprobs"
    assert _judge(server).score([_prompt(0.8), _prompt(0.2)]) == [1.0, 0.0]


def test_http_api_key_is_sent_but_never_shown(server, monkeypatch):
    secret = "sk-test-0123456789"
    monkeypatch.setenv("JUDGE_TEST_KEY", secret)
    judge = _judge(server, api_key_env="JUDGE_TEST_KEY")
    judge.score([_prompt(0.5)])
    assert server.requests[0][2]["Authorization"] == f"Bearer {secret}"
    server.default = "401"
    (error,) = judge.score([_prompt(0.6)])
    for shown in (repr(judge), str(error), judge.describe(), pickle.dumps(judge)):
        assert secret not in str(shown)
    monkeypatch.delenv("JUDGE_TEST_KEY")
    with pytest.raises(ValueError, match="'JUDGE_TEST_KEY', which is not set"):
        _judge(server, api_key_env="JUDGE_TEST_KEY")


# ------------------------------------------------------------------------------------------------ fault policy
def test_raise_names_the_objective_the_principle_and_the_cause(server):
    server.default = "500"
    objective = PrinciplesObjective(
        [{"question": "Is it kind?", "name": "kind"}], _judge(server, max_retries=0), name="judged"
    )
    with pytest.raises(ObjectiveError) as info:
        guard_objective("judged", objective, "raise")(["q", "q"], ["0.5", "0.6"])
    message = str(info.value)
    assert "Objective 'judged' could not score 2 of 2 completions" in message
    assert "principle 'kind' ('Is it kind?') at completion index 0" in message and "HTTP 500" in message
    assert len(server.requests) == 1  # the guard does not re-run a judge to locate the error


def test_skip_keeps_what_was_scored_and_counts_the_rest(server):
    # 3 completions x 2 principles, 2 texts per request, one request at a time: the first request (completion 0,
    # both principles) gets a wrong number of choices, the others are answered.
    server.faults = ["wrong_count"]
    judge = _judge(server, batch_size=2, max_concurrency=1)
    objective = PrinciplesObjective(["Is it good?", "Is it not good?"], judge)
    logged = []
    rewards = guard_objective("principles", objective, "skip")(
        ["q"] * 3, ["0.9", "0.2", "0.7"], log_metric=lambda k, v: logged.append((k, v))
    )
    assert rewards[0] is None and rewards[1:] == pytest.approx([0.5, 0.5])  # (p + (1 - p)) / 2
    assert ("rewards/principles/errors", 1.0) in logged
    assert ("rewards/principles/judge_calls", 6.0) in logged


def test_docs_principles_section_runs():
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "objectives.md").read_text()
    section = text.split("## Principles judged by a model", 1)[1].split("\n## ", 1)[0]
    test = _FencedDocTestParser().get_doctest(section, {}, "docs/objectives.md#principles", None, 0)
    runner = doctest.DocTestRunner()
    runner.run(test)
    assert len(test.examples) >= 4 and runner.failures == 0
