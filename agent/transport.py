"""HTTP for the KBS client when the network is hostile: one deadline, capped bodies, no redirects.

Whoever sits between the VM and the broker (plain http is common) can answer slowly, hugely or
elsewhere. urllib's ``timeout`` bounds each socket operation, not an exchange: a server that
sends one byte every few seconds holds a reader forever, and ``read()`` takes whatever size it
is given. So here:

* one :class:`Deadline` covers every request of a client (handshake retries and resource
  requests alike); each socket operation (connect, TLS handshake, send, every read, the
  headers included) gets ``min(time left, READ_TIMEOUT)``, and when the time is up the
  request fails with "no answer from the broker within N s". Name resolution is the one step
  it cannot bound: the system resolver's own timeouts apply there;
* a reply body is read only up to a cap (the caller's), refused unread when Content-Length
  announces more, and refused after cap + 1 bytes otherwise;
* redirects are never followed (a KBS has no reason to send one, and following it would hand
  the evidence and session cookie to another host or scheme): the error names the target so
  that TRUSTEE_URL can be set to it;
* anything the reply says (status line, headers, body) reaches a message only through
  :func:`~agent.errors.untrusted`.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import io
import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from .errors import BrokerUnreachable, KbsProtocolError, NoKbs, untrusted

READ_TIMEOUT = 20.0  # one socket operation at most: a stalled connection fails while time is left to retry
MIB = 1 << 20


class DeadlinePassed(TimeoutError):
    """The exchange's deadline passed (an OSError, so urllib passes it through as a reason)."""


class Deadline:
    """``seconds`` from the first request on; :meth:`op_timeout` is what the next socket operation gets."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self._end: float | None = None

    def left(self) -> float:
        if self._end is None:  # the clock starts with the first request, not with the client
            self._end = self._clock() + self.seconds
        return self._end - self._clock()

    def passed(self) -> bool:
        return self.left() <= 0

    def op_timeout(self) -> float:
        left = self.left()
        if left <= 0:
            raise DeadlinePassed(f"the {self.seconds:g} s deadline passed")
        return min(left, READ_TIMEOUT)


class _Reader(io.RawIOBase):
    """The response side of a socket: every read re-armed with the time left."""

    def __init__(self, sock, deadline: Deadline):
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # a SocketIO: keeps the fd open while in use
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        self._sock.settimeout(self._deadline.op_timeout())
        try:
            return self._raw.readinto(buf)
        except TimeoutError:
            if self._deadline.passed():
                raise DeadlinePassed(f"the {self._deadline.seconds:g} s deadline passed") from None
            raise

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineSocket:
    """What http.client sees as its socket: sends and reads both under the deadline."""

    def __init__(self, sock, deadline: Deadline):
        self._sock = sock
        self._deadline = deadline

    def sendall(self, data) -> None:
        self._sock.settimeout(self._deadline.op_timeout())
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args, **kwargs):
        return io.BufferedReader(_Reader(self._sock, self._deadline))

    def close(self) -> None:
        self._sock.close()

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


def _connection_class(base: type, deadline: Deadline) -> type:
    class Connection(base):
        def connect(self) -> None:  # the connect and the TLS handshake under the deadline too
            self.timeout = deadline.op_timeout()
            super().connect()
            self.sock = _DeadlineSocket(self.sock, deadline)

    return Connection


class _HTTP(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline):
        super().__init__()
        self._connection = _connection_class(http.client.HTTPConnection, deadline)

    def http_open(self, req):
        return self.do_open(self._connection, req)


class _HTTPS(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline, context: ssl.SSLContext):
        super().__init__(context=context)
        self._connection = _connection_class(http.client.HTTPSConnection, deadline)
        self._ctx = context

    def https_open(self, req):
        return self.do_open(self._connection, req, context=self._ctx)


class Redirected(Exception):
    def __init__(self, code: int, location: str):
        super().__init__(location)
        self.code = code
        self.location = location


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Every 3xx with a target becomes :class:`Redirected`: never followed, whatever host or scheme."""

    def http_error_302(self, req, fp, code, msg, headers):
        fp.close()
        raise Redirected(code, headers.get("Location") or headers.get("URI") or "")

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = ""

    def json(self):
        """The body as JSON, or None when it is not JSON (see :meth:`json_problem`)."""
        return self._parse()[0]

    def json_problem(self) -> str:
        """Why :meth:`json` is None: "not JSON", "JSON nested too deeply", ..."""
        return self._parse()[1]

    def _parse(self):
        try:
            return json.loads(self.body), ""
        except RecursionError:  # "[[[[..." deeper than the interpreter's stack
            return None, "JSON nested too deeply"
        except MemoryError:
            return None, "JSON too large to parse"
        except (ValueError, UnicodeDecodeError):
            return None, "not JSON"

    def describe(self) -> str:
        """The body for a message: never an HTML page, at most a short escaped excerpt of one line."""
        head = self.body.lstrip()[:1]
        if not self.body.strip():
            return "an empty body"
        if head == b"<" or "html" in self.content_type.lower():
            return f"an HTML page of {len(self.body)} bytes"
        return f"“{untrusted(self.body.strip())}”"


class Transport:
    """One broker's requests: the cookie jar, the deadline, the caps and the refusals."""

    def __init__(self, base_url: str, timeout: float, ca_bundle: str | None = None):
        self.deadline = Deadline(timeout)
        self.cookies = http.cookiejar.CookieJar()
        self._base = base_url
        ctx = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), _HTTP(self.deadline),
            _HTTPS(self.deadline, ctx), _NoRedirects())

    def timeout_message(self) -> str:
        return (f"no answer from the broker within {self.deadline.seconds:g} s (TRUSTEE_TIMEOUT, --timeout: "
                f"one deadline for the whole exchange) at {untrusted(self._base)}: it is down, overloaded, "
                "or something on the network path holds the connection")

    def request(self, method: str, url: str, data: bytes | None, headers: dict, cap: int) -> Reply:
        """One request; its reply (any status), or BrokerUnreachable / KbsProtocolError / NoKbs."""
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        what = f"{method} {url[len(self._base):] or '/'}"
        try:
            try:
                resp = self._opener.open(req, timeout=self.deadline.op_timeout())
            except urllib.error.HTTPError as e:
                resp = e  # a reply all the same: its status and body are classified by the caller
            try:
                return Reply(resp.status, _read_capped(resp, cap, what),
                             resp.headers.get("Content-Type", "") if resp.headers else "")
            finally:
                resp.close()
        except Redirected as r:
            target = untrusted(r.location) or "(no Location)"
            raise NoKbs(f"the broker redirected {what} (HTTP {r.code}) to {target}: not followed; set "
                        "TRUSTEE_URL to the final URL") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            if self.deadline.passed():
                raise BrokerUnreachable(self.timeout_message()) from None
            if isinstance(e, http.client.HTTPException) and not isinstance(e, OSError):
                raise KbsProtocolError(f"the broker's answer to {what} is not valid HTTP "
                                       f"({type(e).__name__}: {untrusted(str(e))})") from None
            reason = getattr(e, "reason", e)
            raise BrokerUnreachable(f"cannot reach the key broker at {untrusted(self._base)} "
                                    f"({untrusted(str(reason))}): check TRUSTEE_URL, the network path "
                                    "and that the broker is running") from None


def _read_capped(resp, cap: int, what: str) -> bytes:
    """At most ``cap`` bytes of the body: more is refused, unread when Content-Length says so."""
    declared = (resp.headers.get("Content-Length") or "").strip() if resp.headers else ""
    if declared.isdigit() and int(declared) > cap:
        raise KbsProtocolError(f"the broker's reply to {what} announces {int(declared)} bytes, more than "
                               f"the {_size(cap)} this reply may have: refused unread")
    body = resp.read(cap + 1)
    if len(body) > cap:
        raise KbsProtocolError(f"the broker's reply to {what} is larger than the {_size(cap)} this reply "
                               "may have: refused")
    return body


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n % MIB == 0 else f"{n} bytes"
