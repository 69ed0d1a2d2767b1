"""A scripted model server on 127.0.0.1 that the real agent CLIs talk to instead of a vendor.

It speaks just enough of three APIs: Anthropic Messages (claude; SSE streaming or not), OpenAI
Responses (codex; SSE) and OpenAI chat completions (aider). In `work` mode the "model" reads the
context file, writes a file, runs the tests and says it is done, one tool call per request, the
step chosen from how many tool results the conversation already holds (so each CLI's own extra
requests, such as a title or a token count, are answered without derailing the script). `429` and
`401` modes answer every model request with that status (`429` only the first few, when
`throttled_calls` says how many). Every request is recorded.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

USAGE = {"input_tokens": 120, "output_tokens": 30}


@dataclass
class Script:
    """What the scripted model does."""

    mode: str = "work"  # "work", "429" or "401"
    context_file: str = ""  # default: the `….context.md` path the prompt names
    target: str = "hello.py"  # the file the model writes (relative to the worktree)
    content: str = 'print("hello from the model")\n'
    test_command: str = "python3 -m pytest -q"
    retry_in: int = 120  # seconds a 429 says to wait (its message and Retry-After)
    throttled_calls: int = 0  # in `429` mode: only the first this many model calls (0: all)
    per_ticket: bool = False  # write `<ticket>.py` instead of `target`, so tickets do not collide
    requests: list[dict[str, Any]] = field(default_factory=list)


class ModelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: Script) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.script = script
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> ModelServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (an agent killed at its timeout, one retrying on a new
        connection) is no error of the server's; anything else is printed as before."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def record(self, path: str, body: dict[str, Any]) -> None:
        with self.lock:
            self.script.requests.append({"path": path, "body": body})

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [r["body"] for r in self.script.requests if r["path"].startswith(path)]


class Handler(BaseHTTPRequestHandler):
    server: ModelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.record(self.path, {})
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": "sage-test", "object": "model"}]})
        else:
            self._json(404, {"error": {"message": f"no {self.path} here"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"raw": raw.decode(errors="replace")}
        path = self.path.split("?")[0]
        self.server.record(path, body)
        script = self.server.script
        if path.endswith("/count_tokens"):
            return self._json(200, {"input_tokens": 100})
        if script.mode == "429" and _is_model_call(path) and self._still_throttled():
            wait = "2 minutes" if script.retry_in == 120 else f"{script.retry_in} seconds"
            return self._error(429, "rate_limit_error", f"Rate limit reached. Try again in {wait}.")
        if script.mode == "401" and _is_model_call(path):
            return self._error(401, "authentication_error", "invalid x-api-key")
        if path.endswith("/messages"):
            return self._anthropic(body)
        if path.endswith("/responses"):
            return self._responses(body)
        if path.endswith("/chat/completions"):
            return self._chat(body)
        self._json(404, {"error": {"message": f"no {path} here"}})

    def _still_throttled(self) -> bool:
        script = self.server.script
        if not script.throttled_calls:
            return True
        calls = [r for r in script.requests if _is_model_call(r["path"])]
        return len(calls) <= script.throttled_calls  # this call is recorded already

    # ---- plumbing ------------------------------------------------------------------------------

    def _json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, kind: str, message: str) -> None:
        payload = {"type": "error", "error": {"type": kind, "message": message, "code": kind}}
        retry = {"retry-after": str(self.server.script.retry_in)}
        self._json(status, payload, retry if status == 429 else None)

    def _sse(self, events: Iterator[tuple[str, dict[str, Any]]]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        for name, data in events:
            self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()
        self.close_connection = True

    # ---- Anthropic Messages (claude) -----------------------------------------------------------

    def _anthropic(self, body: dict[str, Any]) -> None:
        blocks = _anthropic_blocks(self.server.script, body)
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        message = {
            "id": "msg_sage",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "sage-test"),
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": USAGE,
        }
        if not body.get("stream"):
            return self._json(200, message)
        self._sse(_anthropic_events(message))

    # ---- OpenAI Responses (codex) --------------------------------------------------------------

    def _responses(self, body: dict[str, Any]) -> None:
        items = _responses_items(self.server.script, body)
        usage = {
            "input_tokens": 120,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 30,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 150,
        }
        response = {
            "id": "resp_sage",
            "object": "response",
            "status": "completed",
            "model": body.get("model", "sage-test"),
            "output": items,
            "usage": usage,
        }

        def events() -> Iterator[tuple[str, dict[str, Any]]]:
            yield (
                "response.created",
                {"type": "response.created", "response": {**response, "output": []}},
            )
            for index, item in enumerate(items):
                yield (
                    "response.output_item.added",
                    {"type": "response.output_item.added", "output_index": index, "item": item},
                )
                yield (
                    "response.output_item.done",
                    {"type": "response.output_item.done", "output_index": index, "item": item},
                )
            yield "response.completed", {"type": "response.completed", "response": response}

        self._sse(events())

    # ---- OpenAI chat completions (aider) -------------------------------------------------------

    def _chat(self, body: dict[str, Any]) -> None:
        script = self.server.script
        fence = _fence(body)  # aider picks a longer fence when its files hold ``` themselves
        text = f"{script.target}\n{fence}\n{script.content}{fence}\n"
        reply = {
            "id": "chatcmpl-sage",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "sage-test"),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
            ],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
        }
        self._json(200, reply)


def _fence(body: dict[str, Any]) -> str:
    match = re.search(r"opening (`{3,})", json.dumps(body.get("messages", [])))
    return match.group(1) if match else "```"


def _is_model_call(path: str) -> bool:
    return path.endswith(("/messages", "/responses", "/chat/completions"))


# ---- the script, in each API's words -------------------------------------------------------------

STEPS = ("read", "write", "test", "done")


def _step(results: int) -> str:
    return STEPS[min(results, len(STEPS) - 1)]


def _anthropic_blocks(script: Script, body: dict[str, Any]) -> list[dict[str, Any]]:
    names = {t.get("name") for t in body.get("tools") or []}
    if "Read" not in names:  # a side request (a title, a summary): plain text
        return [{"type": "text", "text": "Sage test"}]
    results = sum(
        1
        for m in body.get("messages", [])
        if isinstance(m.get("content"), list)
        for b in m["content"]
        if b.get("type") == "tool_result"
    )
    step = _step(results)
    cwd = _working_directory(body)
    calls = {
        "read": ("Read", {"file_path": _context_file(script, body)}),
        "write": (
            "Write",
            {"file_path": f"{cwd}/{_target(script, body)}", "content": script.content},
        ),
        "test": ("Bash", {"command": script.test_command, "description": "Run the tests"}),
    }
    if step == "done":
        return [{"type": "text", "text": "Done: wrote the file and the tests pass."}]
    name, arguments = calls[step]
    return [{"type": "tool_use", "id": f"toolu_{step}", "name": name, "input": arguments}]


def _target(script: Script, body: dict[str, Any]) -> str:
    if not script.per_ticket:
        return script.target
    return Path(_context_file(script, body)).name.split(".context")[0].lower() + ".py"


def _context_file(script: Script, body: dict[str, Any]) -> str:
    match = re.search(r"(/[^\s\\\"']+\.context\.md)", json.dumps(body))
    return script.context_file or (match.group(1) if match else "context.md")


def _working_directory(body: dict[str, Any]) -> str:
    text = json.dumps(body.get("system", "")) + json.dumps(body.get("messages", []))
    match = re.search(r"[Ww]orking directory: (/[^\s\\\"]+)", text)
    return match.group(1) if match else "."


def _anthropic_events(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    start = {**message, "content": [], "stop_reason": None, "usage": {**USAGE, "output_tokens": 1}}
    yield "message_start", {"type": "message_start", "message": start}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            empty = {**block, "input": {}}
            yield (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": empty},
            )
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": USAGE["output_tokens"]},
        },
    )
    yield "message_stop", {"type": "message_stop"}


def _responses_items(script: Script, body: dict[str, Any]) -> list[dict[str, Any]]:
    inputs = body.get("input") or []
    results = sum(
        1 for i in inputs if isinstance(i, dict) and i.get("type", "").endswith("_output")
    )
    step = _step(results)
    if step == "done":
        text = "Done: wrote the file and the tests pass."
        return [
            {
                "type": "message",
                "id": "msg_sage",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ]
    tools = {t.get("name"): t for t in body.get("tools") or [] if isinstance(t, dict)}
    return [_codex_call(script, step, tools, body)]


def _codex_call(
    script: Script, step: str, tools: dict[str, Any], body: dict[str, Any]
) -> dict[str, Any]:
    if step == "read":
        command = f"cat {_context_file(script, body)}"
    elif step == "write":
        command = f"printf '%s' '{script.content}' > {script.target}"
    else:
        command = script.test_command
    name = next((n for n in ("exec_command", "shell_command", "shell") if n in tools), "shell")
    if name == "exec_command":
        arguments: dict[str, Any] = {"cmd": command}
    elif name == "shell_command":
        arguments = {"command": command}
    else:
        arguments = {"command": ["bash", "-lc", command]}
    return {
        "type": "function_call",
        "id": f"fc_{step}",
        "call_id": f"call_{step}",
        "name": name,
        "arguments": json.dumps(arguments),
        "status": "completed",
    }
