#!/usr/bin/env python3
"""The echo agent: a local agent for agent-meshd (meshd-sdk.md "scripts/echo_server.py").

    python3 scripts/echo_server.py PORT NAME

Answers every POST with `{"agent": NAME, "echo": <the JSON body it received>}` (application/json).
The first stdout line is `listening http://127.0.0.1:<port>` (PORT 0 picks a free port). A body that
is not JSON gets 400 `{"error": {"code": "bad_request", "message": ...}}`. Standard library only.

Extra behaviour for tests:
  - `"stream": N` (an int, 0..100) in the body and `text/event-stream` in Accept: the answer is an
    SSE stream of N events `data: {"seq": i, "agent": NAME}` (i = 0..N-1), then the connection closes.
  - `"sleep_ms": M` in the body: waits M ms before answering. A client that disconnects during the
    wait is noticed and logged as `cancelled <X-Mesh-Request-Id>` (no answer is sent).
  - With the environment variable ECHO_EVENTS_FILE set, lines are appended to that file:
      request <X-Mesh-Request-Id> <X-Mesh-From> <X-Mesh-Capability>   for every POST (`-` if absent)
      cancelled <X-Mesh-Request-Id>                                   as above
"""

import json
import os
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_STREAM_EVENTS = 100
_events_lock = threading.Lock()


def log_event(line):
    path = os.environ.get("ECHO_EVENTS_FILE")
    if not path:
        return
    with _events_lock, open(path, "a", encoding="utf-8") as events:
        events.write(line + "\n")


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    agent_name = "echo"

    def log_message(self, format, *args):  # keep stdout for the listening line only
        sys.stderr.write("echo_server: " + (format % args) + "\n")

    def send_json(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def client_gone_within(self, seconds):
        """Waits up to `seconds`; True as soon as the client closes its connection."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if readable:
                try:
                    data = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    return True
                if not data:
                    return True
                # Pipelined bytes from a live client: keep waiting without reading them.
                time.sleep(min(left, 0.05))

    def do_POST(self):
        request_id = self.headers.get("X-Mesh-Request-Id", "-")
        log_event("request %s %s %s" % (request_id, self.headers.get("X-Mesh-From", "-"),
                                        self.headers.get("X-Mesh-Capability", "-")))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            body = json.loads(raw)
        except ValueError as error:
            self.send_json(400, {"error": {"code": "bad_request", "message": "body is not JSON: %s" % error}})
            return

        options = body if isinstance(body, dict) else {}
        sleep_ms = options.get("sleep_ms")
        if isinstance(sleep_ms, int) and not isinstance(sleep_ms, bool) and sleep_ms > 0:
            if self.client_gone_within(sleep_ms / 1000):
                log_event("cancelled %s" % request_id)
                self.close_connection = True
                return

        stream = options.get("stream")
        accept = self.headers.get("Accept", "")
        if (isinstance(stream, int) and not isinstance(stream, bool) and 0 <= stream <= MAX_STREAM_EVENTS
                and "text/event-stream" in accept):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            for seq in range(stream):
                event = json.dumps({"seq": seq, "agent": self.agent_name})
                self.wfile.write(("data: %s\n\n" % event).encode())
                self.wfile.flush()
            self.close_connection = True
            return

        self.send_json(200, {"agent": self.agent_name, "echo": body})


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: echo_server.py PORT NAME\n")
        return 2
    port, name = int(sys.argv[1]), sys.argv[2]
    handler = type("Handler", (EchoHandler,), {"agent_name": name})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    print("listening http://127.0.0.1:%d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
