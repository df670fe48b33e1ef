"""A small OpenAI-compatible judge server on 127.0.0.1 that injects faults, for the HTTP judge's tests.

It answers `POST /v1/completions` and `POST /v1/chat/completions` like an OpenAI-compatible server: the answer token's
top log-probs put P(yes) = p on yes tokens (split over " Yes" and "yes") and 1 - p on " No", plus 10 % on "Maybe",
where p is the number written as the response in the judge prompt (`Response: 0.8`), 0.5 when there is none, and
1 - p when the question contains "not". Each request takes the next fault from `faults` (then `default`):

    ok, 500, 401, timeout (sleeps `slow_s` before answering), garbage (a body that is not JSON),
    wrong_count (one choice too few), no_logprobs (answers "Yes"/"No" as text only), rambling (text "Perhaps", no
    log-probs),
    inf, -inf, nan, 1e999, 10**400 (the " Yes" log-prob is that number: JSON's non-standard `Infinity`, `-Infinity`,
    `NaN`, a literal beyond a float, an integer beyond a float),
    drip (the answer's body starts with `drip_bytes` spaces sent one every `drip_s` seconds), drip_headers (the first
    `drip_bytes` bytes of the status line and headers, one every `drip_s` seconds),
    huge (a 200 answer of `huge_bytes` bytes with its Content-Length), huge_unsized (the same without a
    Content-Length: it ends when the connection closes); `served` counts the bytes of both actually sent,
    echo_json, echo_html, echo_url (an HTTP error whose body echoes the request's Authorization header JSON-, HTML- or
    URL-escaped), echo_body (a 200 JSON answer without choices that echoes it), echo_answer (it as the answer text).

A dripping or huge answer stops when the server is closed (or the client hangs up).
"""

from __future__ import annotations

import html
import json
import math
import re
import threading
import time
import urllib.parse
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


NON_FINITE = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN", "1e999": "1e999", "10**400": "1" + "0" * 400}


def _top_logprobs(p: float) -> dict[str, float]:
    mass = {" Yes": 0.6 * 0.9 * p, "yes": 0.4 * 0.9 * p, " No": 0.9 * (1 - p), "Maybe": 0.1}
    return {token: math.log(m) for token, m in mass.items() if m > 0}


class FakeJudgeServer:
    def __init__(self):
        self.faults: list[str] = []
        self.default = "ok"
        self.slow_s = 1.0
        self.drip_s = 0.2
        self.drip_bytes = 15
        self.huge_bytes = 64 * 2**20
        self.served = 0  # bytes of huge answers sent
        self.requests: list[tuple[str, dict, dict]] = []  # (path, payload, headers)
        self._lock = threading.Lock()
        self._closing = threading.Event()
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
        self._closing.set()
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

            def _head(self, status: int, length: int | None, content_type: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if length is not None:
                    self.send_header("Content-Length", str(length))
                self.end_headers()

            def _send(self, status: int, body: str, content_type: str = "application/json"):
                data = body.encode()
                self._head(status, len(data), content_type)
                self.wfile.write(data)

            def _drip(self, data: bytes):
                for offset in range(len(data)):
                    if server._closing.wait(server.drip_s):
                        return
                    self.wfile.write(data[offset : offset + 1])

            def _huge(self, sized: bool):
                self._head(200, server.huge_bytes if sized else None)
                chunk = b" " * 65536
                left = server.huge_bytes
                while left > 0 and not server._closing.is_set():
                    self.wfile.write(chunk[:left])
                    with server._lock:
                        server.served += min(left, len(chunk))
                    left -= len(chunk)

            def _answer(self, fault: str, payload):
                auth = self.headers.get("Authorization", "")
                if fault == "500":
                    return self._send(500, '{"error": "internal error"}')
                if fault == "401":
                    return self._send(401, '{"error": "invalid api key"}')
                if fault == "garbage":
                    return self._send(200, "<html>not json{")
                if fault == "echo_json":
                    return self._send(401, json.dumps({"error": {"message": "invalid api key", "received": auth}}))
                if fault == "echo_html":
                    return self._send(403, f"<html><p>Forbidden: {html.escape(auth)}</p></html>", "text/html")
                if fault == "echo_url":
                    return self._send(400, f"log in at /login?retry={urllib.parse.quote(auth, safe='')}", "text/plain")
                if fault == "echo_body":
                    return self._send(200, json.dumps({"error": "no choices", "received": auth}))
                if fault in ("huge", "huge_unsized"):
                    return self._huge(sized=fault == "huge")
                if fault == "timeout":
                    time.sleep(server.slow_s)
                body = self._completion(fault, payload, auth)
                if fault == "drip":
                    data = b" " * server.drip_bytes + body.encode()
                    self._head(200, len(data))
                    self._drip(data[: server.drip_bytes])
                    return self.wfile.write(data[server.drip_bytes :])
                if fault == "drip_headers":
                    data = body.encode()
                    raw = (
                        f"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                    ).encode() + data
                    self._drip(raw[: server.drip_bytes])
                    return self.wfile.write(raw[server.drip_bytes :])
                self._send(200, body)

            def _completion(self, fault: str, payload, auth: str) -> str:
                chat = self.path.endswith("/chat/completions")
                prompts = [payload["messages"][-1]["content"]] if chat else list(payload["prompt"])
                choices = []
                for index, prompt in enumerate(prompts):
                    p = response_probability(prompt)
                    text = "Yes" if p >= 0.5 else "No"
                    if fault == "rambling":
                        text = "Perhaps"
                    if fault == "echo_answer":
                        text = auth
                    with_logprobs = fault not in ("no_logprobs", "rambling", "echo_answer")
                    top = _top_logprobs(p)
                    if fault in NON_FINITE:
                        top[" Yes"] = "@LOGPROB@"
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
                body = json.dumps({"id": "x", "object": "text_completion", "choices": choices})
                return body.replace('"@LOGPROB@"', NON_FINITE.get(fault, ""))

        return Handler
