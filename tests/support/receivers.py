"""Real receivers on loopback for the alert notification tests: an SMTP server (aiosmtpd)
and an HTTP server (stdlib, in a thread) standing in for Slack, PagerDuty and webhooks.

Both record what they received and let a test wait for it (a condition variable, not a
sleep). The HTTP receiver answers from a script (``answer(500, times=2)``) so a test can
prove retries and dead-lettering, and checks a webhook's signature the way docs/tasks.md
tells receivers to (``verify_signature`` below is that recipe, written out again here so
the test does not check the library against itself).
"""

from __future__ import annotations

import datetime as dt
import email.policy
import hashlib
import hmac
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

WAIT_S = 30.0


class Recorder:
    """A list of received things and a condition to wait on."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cv = threading.Condition()

    def add(self, item: Any) -> None:
        with self._cv:
            self.items.append(item)
            self._cv.notify_all()

    def wait_for(self, count: int, timeout: float = WAIT_S) -> list[Any]:
        """The first ``count`` items, once they have arrived (AssertionError after timeout)."""
        with self._cv:
            if not self._cv.wait_for(lambda: len(self.items) >= count, timeout):
                raise AssertionError(f"received {len(self.items)} of {count} within {timeout:g}s: {self.items!r}")
            return list(self.items[:count])


# -- HTTP -----------------------------------------------------------------------------------


def verify_signature(secret: str, headers: Any, body: bytes, tolerance_s: int = 300) -> None:
    """The verification recipe of docs/tasks.md: raise ValueError unless the request is signed
    by ``secret`` within ``tolerance_s`` of now."""
    timestamp = headers.get("X-Jobqueue-Timestamp")
    signature = headers.get("X-Jobqueue-Signature")
    if not timestamp or not signature or not timestamp.isdigit():
        raise ValueError("missing signature headers")
    if abs(time.time() - int(timestamp)) > tolerance_s:
        raise ValueError("timestamp outside the replay window")
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature, f"v1={expected}"):
        raise ValueError("bad signature")


@dataclass
class HttpRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    #: The status the receiver answered.
    status: int
    #: For a signed webhook: None when the signature verified, else why not.
    signature_error: str | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class HttpReceiver(Recorder):
    """``url(path)`` to post to; ``requests`` (HttpRequest) what came; ``answer(...)`` to script."""

    def __init__(self) -> None:
        super().__init__()
        self.secret: str | None = None
        self._script: list[_Answer] = []
        self.default = _Answer(200, body=b"ok")
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                answer = receiver._next()
                error = None
                if receiver.secret is not None:
                    try:
                        verify_signature(receiver.secret, self.headers, body)
                    except (KeyError, ValueError) as exc:
                        error = str(exc) or type(exc).__name__
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
                receiver.add(HttpRequest(self.path, dict(self.headers.items()), body, answer.status, error))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="http-receiver", daemon=True)

    def _next(self) -> _Answer:
        with self._cv:
            return self._script.pop(0) if self._script else self.default

    def answer(self, status: int, *, times: int = 1, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        """Answer the next ``times`` requests with ``status`` (then the default, 200)."""
        with self._cv:
            self._script.extend(_Answer(status, dict(headers or {}), body) for _ in range(times))

    def url(self, path: str = "/") -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    @property
    def requests(self) -> list[HttpRequest]:
        return list(self.items)

    def start(self) -> HttpReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver().start()
    yield receiver
    receiver.stop()


# -- SMTP -----------------------------------------------------------------------------------


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    #: The login the client authenticated as, when it did.
    login: str | None
    tls: bool


def self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for ``host`` (an IP address) and its key, PEM files in ``directory``."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jobqueue test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpReceiver(Recorder):
    """An aiosmtpd server on loopback. ``mode``: "plain", "starttls" (TLS required before
    MAIL) or "ssl" (implicit TLS); ``logins``: user -> password, required when given."""

    def __init__(
        self, mode: str = "plain", cert: tuple[Path, Path] | None = None, logins: dict[str, str] | None = None
    ):
        super().__init__()
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        receiver = self
        self.mode = mode
        self.logins = dict(logins or {})
        context = None
        if mode != "plain":
            assert cert is not None, "TLS needs a certificate"
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(cert[0]), str(cert[1]))

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                login = session.auth_data if session.authenticated else None
                receiver.add(
                    Mail(
                        envelope.mail_from,
                        list(envelope.rcpt_tos),
                        message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default),
                        login,
                        receiver.mode == "ssl" or session.ssl is not None,
                    )
                )
                return "250 OK"

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
            if isinstance(auth_data, LoginPassword):
                user, password = auth_data.login.decode(), auth_data.password.decode()
                ok = receiver.logins.get(user) == password
                return AuthResult(success=ok, handled=False, auth_data=user if ok else None)
            return AuthResult(success=False, handled=False)

        options: dict[str, Any] = {}
        if mode == "starttls":
            options.update(tls_context=context, require_starttls=True)
        if self.logins:
            # aiosmtpd offers AUTH only after STARTTLS unless told otherwise, and does not count
            # implicit TLS as TLS; it warns (an error under pytest) when AUTH is required without
            # STARTTLS: so AUTH is required after STARTTLS, offered (not required) otherwise.
            starttls = mode == "starttls"
            options.update(authenticator=authenticator, auth_required=starttls, auth_require_tls=starttls)
        self.controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=free_port(),
            ssl_context=context if mode == "ssl" else None,
            server_hostname="127.0.0.1",
            **options,
        )

    @property
    def port(self) -> int:
        return int(self.controller.port)

    @property
    def mails(self) -> list[Mail]:
        return list(self.items)

    def start(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def smtp_receiver() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver().start()
    yield receiver
    receiver.stop()
