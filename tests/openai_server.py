"""A scripted HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol, shared by the tests
that need a teacher that misbehaves on purpose (broken JSON, HTTP errors, dropped connections, secrets
echoed back). `transformers serve` (conftest.openai_server) is the real server; this one is for scripts.

`reply(request, headers)` (headers: case-insensitive) decides each POST /v1/chat/completions: a string is the assistant's reply; a
tuple (status, message) or (status, message, headers) is an HTTP error; None drops the connection
without a reply. GET /v1/models lists one model.
"""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ScriptedServer:
    def __init__(self, reply, model: str = "scripted"):
        self.reply = reply
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, payload: dict, headers: dict | None = None):
                body = json.dumps(payload).encode()
                self.send_response(status)
                for key, value in {
                    "Content-Type": "application/json",
                    "Content-Length": str(len(body)),
                    **(headers or {}),
                }.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    self._send(
                        200,
                        {
                            "object": "list",
                            "data": [{"id": model, "object": "model", "created": 0, "owned_by": "test"}],
                        },
                    )
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                with server.lock:
                    server.requests.append(request)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    out = server.reply(request, self.headers)  # case-insensitive get
                    if out is None:
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                    elif isinstance(out, tuple):
                        status, message, *headers = out
                        self._send(status, {"error": {"message": message, "type": "invalid_request_error"}}, *headers)
                    else:
                        self._send(
                            200,
                            {
                                "id": f"chatcmpl-{len(server.requests)}",
                                "object": "chat.completion",
                                "created": 0,
                                "model": request["model"],
                                "choices": [
                                    {
                                        "index": 0,
                                        "message": {"role": "assistant", "content": out},
                                        "finish_reason": "stop",
                                        "logprobs": None,
                                    }
                                ],
                                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                            },
                        )
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
