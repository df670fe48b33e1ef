"""A small OpenAI-compatible judge server on 127.0.0.1 that injects faults, for the HTTP judge's tests.

It answers `POST /v1/completions` and `POST /v1/chat/completions` like an OpenAI-compatible server: the answer token's
top log-probs put P(yes) = p on yes tokens (split over " Yes" and "yes") and 1 - p on " No", plus 10 % on "Maybe",
where p is the number written as the response in the judge prompt (`Response: 0.8`), 0.5 when there is none, and
1 - p when the question contains "not". Each request takes the next fault from `faults` (then `default`):

    ok, 500, 401, timeout (sleeps `slow_s` before answering), garbage (a body that is not JSON),
    wrong_count (one choice too few), no_logprobs (answers "Yes"/"No" as text only), rambling (text "Perhaps", no
    log-probs)
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def response_probability(prompt: str) -> float:
    match = re.search(r"Response: (.*?)\n\nQuestion: (.*?)\n", prompt, re.DOTALL)
    if not match:
        return 0.5
    try:
        p = float(match.group(1).strip())
    except ValueError:
        p = 0.5
    return 1.0 - p if "not" in match.group(2).split() else p


def _top_logprobs(p: float) -> dict[str, float]:
    mass = {" Yes": 0.6 * 0.9 * p, "yes": 0.4 * 0.9 * p, " No": 0.9 * (1 - p), "Maybe": 0.1}
    return {token: math.log(m) for token, m in mass.items() if m > 0}


class FakeJudgeServer:
    def __init__(self):
        self.faults: list[str] = []
        self.default = "ok"
        self.slow_s = 1.0
        self.requests: list[tuple[str, dict, dict]] = []  # (path, payload, headers)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def _next_fault(self) -> str:
        with self._lock:
            return self.faults.pop(0) if self.faults else self.default

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                try:
                    payload = json.loads(self.rfile.read(length))
                except ValueError:
                    payload = None
                with server._lock:
                    server.requests.append((self.path, payload, dict(self.headers)))
                fault = server._next_fault()
                try:
                    self._answer(fault, payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def _send(self, status: int, body: str):
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _answer(self, fault: str, payload):
                if fault == "500":
                    return self._send(500, '{"error": "internal error"}')
                if fault == "401":
                    return self._send(401, '{"error": "invalid api key"}')
                if fault == "garbage":
                    return self._send(200, "<html>not json{")
                if fault == "timeout":
                    time.sleep(server.slow_s)
                chat = self.path.endswith("/chat/completions")
                prompts = [payload["messages"][-1]["content"]] if chat else list(payload["prompt"])
                choices = []
                for index, prompt in enumerate(prompts):
                    p = response_probability(prompt)
                    text = "Yes" if p >= 0.5 else "No"
                    if fault == "rambling":
                        text = "Perhaps"
                    with_logprobs = fault not in ("no_logprobs", "rambling")
                    top = _top_logprobs(p)
                    if chat:
                        logprobs = {
                            "content": [
                                {
                                    "token": text,
                                    "logprob": -0.1,
                                    "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top.items()],
                                }
                            ]
                        }
                        choice = {"index": index, "message": {"role": "assistant", "content": text}}
                    else:
                        logprobs = {"tokens": [text], "token_logprobs": [-0.1], "top_logprobs": [top]}
                        choice = {"index": index, "text": text}
                    choice["logprobs"] = logprobs if with_logprobs else None
                    choices.append(choice)
                if fault == "wrong_count":
                    choices = choices[:-1]
                self._send(200, json.dumps({"id": "x", "object": "text_completion", "choices": choices}))

        return Handler
