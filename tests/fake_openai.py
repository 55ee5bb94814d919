"""A fake of the outside world: an OpenAI-compatible chat-completions server on loopback that
speaks the real wire format. The scenario in the request path (or ``default_scenario``) picks the
answer; every request is recorded for tests to inspect."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def scene_json(i: int, duration: float = 4.0, **changes: Any) -> dict[str, Any]:
    scene = {"description": f"Scene {i}: Acme Sparkling Water on a sunny desk.",
             "script": f"Line {i}.", "shot_type": "medium", "transition": "cut",
             "duration_s": duration,
             "image_prompt": f"Medium shot of a can of Acme Sparkling Water, scene {i}, soft light"}
    scene.update(changes)
    return scene


VALID_STORYBOARD = {"scenes": [scene_json(0, 2.0), scene_json(1, 4.0),
                               scene_json(2, 6.0, script="Grab a can at acme.com",
                                          image_prompt="Acme can next to alcohol bottles, "
                                                       "studio light")]}
REFUSAL = "I'm sorry, but I can't help with that request."


class FakeOpenAI:
    """``POST [/<scenario>]/v1/chat/completions`` in the real wire format. The scenario in the
    path picks the answer; every request is recorded for the test to inspect."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        # The answer for requests whose path names no scenario (a farm's fixed AI_BASE_URL).
        self.default_scenario = "ok"
        self.release = threading.Event()  # ends the deliberately slow answer at teardown
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                match = re.fullmatch(r"(?:/(?P<scenario>[\w-]+))?/v1/chat/completions", self.path)
                scenario = (match and match.group("scenario")) or fake.default_scenario
                fake.requests.append({"scenario": scenario, "path": self.path, "body": body,
                                      "headers": {k.lower(): v for k, v in self.headers.items()}})
                if match is None:
                    return self.reply(404, {"error": {"message": "Unknown path",
                                                      "type": "invalid_request_error"}})
                if scenario == "html":  # a base URL that points at some web page
                    return self.reply(200, b"<html><body>Welcome</body></html>", "text/html")
                status, payload = fake.answer(scenario, body)
                if scenario == "slow":
                    fake.release.wait(10)  # longer than the client waits
                try:
                    self.reply(status, payload)
                except OSError:
                    pass  # the client gave up, as it should

            def reply(self, status: int, payload: dict[str, Any] | bytes,
                      content_type: str = "application/json") -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-request-id", f"req_{len(fake.requests)}")
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def base_url(self, scenario: str | None = None) -> str:
        return f"{self.url}/{scenario}/v1" if scenario else f"{self.url}/v1"

    def calls(self, scenario: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["scenario"] == scenario]

    @staticmethod
    def completion(body: dict[str, Any], content: str | None, refusal: str | None = None,
                   finish_reason: str = "stop") -> dict[str, Any]:
        return {
            "id": "chatcmpl-test123", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"] + "-2024-07-18", "system_fingerprint": "fp_test",
            "choices": [{"index": 0, "logprobs": None, "finish_reason": finish_reason,
                         "message": {"role": "assistant", "content": content,
                                     "refusal": refusal, "annotations": []}}],
            "usage": {"prompt_tokens": 321, "completion_tokens": 123, "total_tokens": 444},
        }

    def answer(self, scenario: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        def ok(content: Any) -> tuple[int, dict[str, Any]]:
            text = content if isinstance(content, str) else json.dumps(content)
            return 200, self.completion(body, text)

        if scenario in ("ok", "slow"):
            return ok(VALID_STORYBOARD)
        if scenario == "not-json":
            return ok("Sure! Here is a storyboard with three scenes: first, a can on a desk...")
        if scenario == "missing-field":
            broken = json.loads(json.dumps(VALID_STORYBOARD))
            del broken["scenes"][1]["image_prompt"]
            return ok(broken)
        if scenario == "bad-enum":
            broken = json.loads(json.dumps(VALID_STORYBOARD))
            broken["scenes"][0]["shot_type"] = "dutch_angle"
            return ok(broken)
        if scenario == "wrong-count":
            return ok({"scenes": VALID_STORYBOARD["scenes"][:2]})
        if scenario == "refusal":
            return 200, self.completion(body, None, refusal=REFUSAL)
        if scenario == "truncated":
            return 200, self.completion(body, '{"scenes": [{"description": "A can',
                                        finish_reason="length")
        if scenario == "scene":
            return ok(scene_json(9, 2.5, description="A close-up of the can in warm sunset "
                                                      "light.", shot_type="close_up"))
        if scenario == "not-a-completion":
            return 200, {"status": "ok", "service": "something else"}
        if scenario == "no-usage":
            payload = self.completion(body, json.dumps(VALID_STORYBOARD))
            del payload["usage"]
            return 200, payload
        if scenario == "unauthorized":
            return 401, {"error": {"message": "Incorrect API key provided: wr***ey.",
                                   "type": "invalid_request_error", "param": None,
                                   "code": "invalid_api_key"}}
        if scenario == "server-error":
            return 500, {"error": {"message": "The server had an error while processing your "
                                              "request.", "type": "server_error", "param": None,
                                   "code": None}}
        if scenario == "rate-limited":
            return 429, {"error": {"message": "You exceeded your current quota.",
                                   "type": "insufficient_quota", "param": None,
                                   "code": "insufficient_quota"}}
        return 404, {"error": {"message": f"unknown scenario {scenario}"}}
