"""A stand-in CRM on loopback for the image test: answers every path with a page that names
it, and keeps what it was sent, so a test can tell a proxied request from one the gateway
answered itself. The standard library only: the test runs before any virtualenv exists."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MARK = "stand-in CRM"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class StandinCrm:
    server: ThreadingHTTPServer
    seen: list[Seen] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        assert isinstance(host, str)  # an AF_INET server's address, never a Unix socket's bytes
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_standin_crm() -> StandinCrm:
    crm: StandinCrm

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, with_body: bool) -> None:
            crm.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
            body = f"{MARK}: {self.command} {self.path}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer(with_body=True)

        def do_HEAD(self) -> None:
            self._answer(with_body=False)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the report says what matters."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    crm = StandinCrm(server)
    threading.Thread(target=server.serve_forever, name="standin-crm", daemon=True).start()
    return crm
