"""The dev broker's HTTP side: one handler for the three KBS endpoints, the server, --resource files.

Loopback by default. Errors go out in Trustee's ErrorInformation form (``{"type": ".../errors/
<Variant>", "detail": ...}``) with Trustee's status codes, so the client maps them as it does
against a real Trustee; 400 and 413 are plain text, as Trustee's JSON extractor answers them.
"""

from __future__ import annotations

import json
import os
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .. import binding
from ..errors import UsageError
from .core import ERROR_TYPE, MAX_BODY, SESSION_SECONDS, Broker, Refusal, _json, log


def make_handler(broker: Broker):
    class Handler(BaseHTTPRequestHandler):
        server_version = "cryptfs-dev-broker"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # access log without cookies or bodies
            log.debug("%s %s", self.address_string(), fmt % args)

        def _cookie(self) -> str | None:
            for part in (self.headers.get("Cookie") or "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == "kbs-session-id":
                    return value
            return None

        def _body(self):
            """The request's JSON: at most MAX_BODY bytes, refused unread beyond (the connection is
            then closed, its rest never read); nesting too deep for the parser is a 400 too."""
            length = (self.headers.get("Content-Length") or "0").strip()
            if not length.isdigit():
                self.close_connection = True
                raise Refusal(400, "", "Content-Length is not a number")
            if int(length) > MAX_BODY:
                self.close_connection = True
                raise Refusal(413, "", f"request body larger than {MAX_BODY} bytes")
            raw = self.rfile.read(int(length)) if int(length) else b""
            return _json(raw, "body")

        def _send(self, status: int, obj, sid: str | None = None) -> None:
            data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
            self.send_response(status)
            ctype = "text/plain" if isinstance(obj, bytes) else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            if sid:
                expires = formatdate(time.time() + SESSION_SECONDS, usegmt=True)
                self.send_header("Set-Cookie", f"kbs-session-id={sid}; Expires={expires}")
            self.end_headers()
            self.wfile.write(data)

        def _dispatch(self, method: str) -> None:
            path = self.path.split("?", 1)[0]
            sid = self._cookie()
            try:
                if method == "POST" and path.endswith("/kbs/v0/auth"):
                    challenge, new_sid = broker.auth(self._body())
                    return self._send(200, challenge, new_sid)
                if method == "POST" and path.endswith("/kbs/v0/attest"):
                    token = broker.attest(sid, self._body(), self.headers.get("AAInstanceInfo"))
                    return self._send(200, token, sid)
                marker = "/kbs/v0/resource/"
                if method == "GET" and marker in path:
                    rpath = path.split(marker, 1)[1]
                    if rpath.count("/") != 2:
                        raise Refusal(404, "InvalidRequestPath", f"invalid resource path {rpath!r}")
                    return self._send(200, broker.resource(sid, rpath), sid)
                raise Refusal(404, "InvalidRequestPath", f"no such endpoint {method} {path}")
            except Refusal as r:
                if r.status in (400, 413):
                    return self._send(r.status, r.detail.encode())
                log.info("refused %s %s: %s %s", method, path, r.variant, r.detail)
                return self._send(r.status, {"type": ERROR_TYPE + r.variant, "detail": r.detail})

        def do_POST(self):  # noqa: N802 (http.server naming)
            self._dispatch("POST")

        def do_GET(self):  # noqa: N802
            self._dispatch("GET")

    return Handler


def serve(broker: Broker, host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    """Bind and return the server (call serve_forever); loopback unless asked otherwise."""
    server = ThreadingHTTPServer((host, port), make_handler(broker))
    server.daemon_threads = True
    return server


def load_resources(specs: list[str]) -> dict[str, bytes]:
    """``repo/type/tag=@FILE`` (the file's bytes) for each --resource."""
    out = {}
    for spec in specs:
        path, eq, source = spec.partition("=")
        if not eq or not source.startswith("@"):
            raise UsageError(f"--resource {spec!r}: expected repo/type/tag=@FILE (a value on the command "
                             "line would be visible to other users)")
        try:
            binding.kbs_resource_path("kbs:///" + path)
        except ValueError as e:
            raise UsageError(f"--resource {path!r}: {e}") from None
        try:
            with open(os.path.expanduser(source[1:]), "rb") as f:
                out[path] = f.read()
        except OSError as e:
            raise UsageError(f"--resource {path}: cannot read {source[1:]}: {e.strerror}") from None
    return out
