"""The code senders against real servers on loopback: an aiohttp app playing the generic SMS
provider and Twilio, aiosmtpd playing the mail server (plain, login, STARTTLS, TLS), a real file."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import ipaddress
import json
import os
import socket
import ssl
import stat
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.clock import FakeClock
from gateway.config.messaging import (
    HttpProvider,
    OutboxProvider,
    Provider,
    SmtpProvider,
    TwilioProvider,
)
from gateway.senders import (
    HttpSender,
    Message,
    OutboxSender,
    Sender,
    SmtpSender,
    TwilioSender,
    open_sender,
)
from gateway.senders.http import render_body
from gateway.senders.retry import backoff_delay, scrub, secrets_of
from tests.conftest import Served, serve

CODE = "493817"
TEXT = f'Your code is {CODE}.\nSay "hi" — ünïcødé ✓ {{to}} \\ {{"x": 1}}\tend'
PHONE = "+31612345678"
SID = "AC" + "1" * 32
TOKEN = "twilio-auth-token-value"
API_KEY = "provider-api-key-value"
FAST = 0.01  # backoff base in tests: the schedule is checked by backoff_delay, not by waiting

S = TypeVar("S", bound=Sender)


# ---------------------------------------------------------------- HTTP and Twilio provider


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


REQUESTS = web.AppKey("requests", list[Seen])
TWILIO_SCRIPT = web.AppKey("twilio_script", list[str])  # answers in turn; the last one repeats


async def _record(request: web.Request) -> Seen:
    seen = Seen(
        request.method,
        request.path,
        dict(request.query),
        dict(request.headers),
        await request.read(),
    )
    request.app[REQUESTS].append(seen)
    return seen


def _count(request: web.Request) -> int:
    return sum(1 for seen in request.app[REQUESTS] if seen.path == request.path)


async def sms_ok(request: web.Request) -> web.Response:
    await _record(request)
    return web.json_response({"id": "msg-1"}, status=202)


async def sms_flaky(request: web.Request) -> web.Response:
    await _record(request)
    if _count(request) == 1:
        return web.Response(status=503, text="try again")
    return web.json_response({"id": "msg-2"}, status=202)


async def sms_down(request: web.Request) -> web.Response:
    await _record(request)
    return web.Response(status=503, text="down")


async def sms_error(request: web.Request) -> web.Response:
    await _record(request)
    return web.Response(status=500, text="internal error")


async def sms_bad(request: web.Request) -> web.Response:
    seen = await _record(request)
    return web.Response(status=400, body=b"rejected: " + seen.body)  # echoes the text back


async def sms_slow(request: web.Request) -> web.Response:
    await _record(request)
    await asyncio.sleep(5)  # cancelled when the client gives up (handler_cancellation)
    return web.json_response({"id": "late"}, status=202)


async def twilio(request: web.Request) -> web.Response:
    await _record(request)
    expected = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    if request.headers.get("Authorization") != expected:
        return web.json_response(
            {"code": 20003, "message": "Authenticate", "status": 401}, status=401
        )
    form = {name: str(value) for name, value in (await request.post()).items()}
    script = request.app[TWILIO_SCRIPT]
    answer = script.pop(0) if len(script) > 1 else script[0]
    if answer == "busy":
        return web.json_response({"code": 20429, "message": "Too Many Requests"}, status=429)
    if answer == "error":
        return web.json_response({"code": 20500, "message": "Internal Server Error"}, status=500)
    if answer == "invalid":
        message = f"The 'To' number {form['To']} is not a valid phone number."
        return web.json_response({"code": 21211, "message": message, "status": 400}, status=400)
    if answer == "echo":
        message = f"Message body rejected: {form['Body']}"
        return web.json_response({"code": 30007, "message": message, "status": 400}, status=400)
    if answer == "no-sid":
        return web.json_response({"status": "queued"}, status=201)
    # Twilio answers with the whole resource, the body included.
    return web.json_response(
        {"sid": "SM" + "a" * 32, "status": "queued", "body": form["Body"]}, status=201
    )


def build_provider_app() -> web.Application:
    app = web.Application()
    app[REQUESTS] = []
    app[TWILIO_SCRIPT] = ["ok"]
    app.router.add_post("/sms/ok", sms_ok)
    app.router.add_get("/sms/ok", sms_ok)
    app.router.add_post("/sms/flaky", sms_flaky)
    app.router.add_post("/sms/down", sms_down)
    app.router.add_post("/sms/error", sms_error)
    app.router.add_post("/sms/bad", sms_bad)
    app.router.add_post("/sms/slow", sms_slow)
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", twilio)
    return app


@pytest.fixture
async def provider() -> AsyncIterator[Served]:
    served = await serve(build_provider_app(), handler_cancellation=True)
    yield served
    await served.runner.cleanup()


@pytest.fixture
async def keep() -> AsyncIterator[Callable[[S], S]]:
    """Hands back the sender it is given and closes it after the test."""
    made: list[Sender] = []

    def keeper(sender: S) -> S:
        made.append(sender)
        return sender

    yield keeper
    for sender in made:
        await sender.close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound but never listening: connections are refused
        yield sock.getsockname()[1]


def sms_provider(url: str, **options: Any) -> HttpProvider:
    headers = (("X-Api-Key", API_KEY),)
    return HttpProvider(url=url, headers=headers, **options)


def seen(served: Served) -> list[Seen]:
    return served.app[REQUESTS]


def assert_no_secrets(detail: str, *secrets: str) -> None:
    for secret in (TEXT, CODE, *secrets):
        assert secret not in detail


# ---------------------------------------------------------------- generic HTTP


def test_backoff_doubles_from_its_base() -> None:
    assert [backoff_delay(0.5, retry) for retry in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]


def test_template_braces_stay_and_placeholders_fill_once() -> None:
    template = '{"to": "{to}", "meta": {"tag": "otp"}, "text": "{text}"}'
    body = render_body(template, "json", PHONE, TEXT)
    assert json.loads(body) == {"to": PHONE, "meta": {"tag": "otp"}, "text": TEXT}


def test_scrub_removes_the_text_the_code_and_secrets() -> None:
    detail = f"rejected {TEXT!s} code {CODE} key {API_KEY} " + "x" * 500
    cleaned = scrub(detail, [*secrets_of(Message(PHONE, TEXT)), API_KEY])
    assert_no_secrets(cleaned, API_KEY)
    assert "\n" not in cleaned
    assert len(cleaned) <= 200


async def test_json_body_keeps_quotes_newlines_and_unicode(
    provider: Served, keep: Callable[[HttpSender], HttpSender]
) -> None:
    sender = keep(HttpSender(sms_provider(f"{provider.url}/sms/ok"), backoff=FAST))
    delivery = await sender.send(Message(PHONE, TEXT))
    assert (delivery.ok, delivery.provider, delivery.detail, delivery.attempts) == (
        True,
        "http",
        "status 202",
        1,
    )
    [request] = seen(provider)
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Api-Key"] == API_KEY
    assert json.loads(request.body) == {"to": PHONE, "text": TEXT}


async def test_form_body_is_url_encoded(
    provider: Served, keep: Callable[[HttpSender], HttpSender]
) -> None:
    config = sms_provider(
        f"{provider.url}/sms/ok", body="to={to}&message={text}&sender=CRM", format="form"
    )
    delivery = await keep(HttpSender(config, backoff=FAST)).send(Message(PHONE, TEXT))
    assert delivery.ok
    [request] = seen(provider)
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    fields = urllib.parse.parse_qs(request.body.decode("ascii"), strict_parsing=True)
    assert fields == {"to": [PHONE], "message": [TEXT], "sender": ["CRM"]}


async def test_get_with_form_puts_the_fields_in_the_query(
    provider: Served, keep: Callable[[HttpSender], HttpSender]
) -> None:
    config = sms_provider(
        f"{provider.url}/sms/ok?account=7", method="GET", body="to={to}&text={text}", format="form"
    )
    delivery = await keep(HttpSender(config, backoff=FAST)).send(Message(PHONE, TEXT))
    assert delivery.ok
    [request] = seen(provider)
    assert (request.method, request.body) == ("GET", b"")
    assert request.query == {"account": "7", "to": PHONE, "text": TEXT}


async def test_a_503_is_retried_until_it_passes(
    provider: Served, keep: Callable[[HttpSender], HttpSender]
) -> None:
    config = sms_provider(f"{provider.url}/sms/flaky", retries=2)
    delivery = await keep(HttpSender(config, backoff=FAST)).send(Message(PHONE, TEXT))
    assert (delivery.ok, delivery.detail, delivery.attempts) == (True, "status 202", 2)
    assert len(seen(provider)) == 2


async def test_a_provider_that_stays_down_gets_retries_plus_one_attempts(
    provider: Served, keep: Callable[[HttpSender], HttpSender]
) -> None:
    config = sms_provider(f"{provider.url}/sms/down", retries=2)
    delivery = await keep(HttpSender(config, backoff=FAST)).send(Message(PHONE, TEXT))
    assert (delivery.ok, delivery.detail, delivery.attempts) == (False, "status 503", 3)
    assert len(seen(provider)) == 3


async def test_a_500_is_final_the_message_may_have_gone_out(
    provider: Served, keep: Callable[[HttpSender], HttpSender]
) -> None:
    config = sms_provider(f"{provider.url}/sms/error", retries=2)
    delivery = await keep(HttpSender(config, backoff=FAST)).send(Message(PHONE, TEXT))
    assert (delivery.ok, delivery.detail, delivery.attempts) == (False, "status 500", 1)
    assert len(seen(provider)) == 1


async def test_a_4xx_is_final_and_its_body_stays_out_of_the_detail(
    provider: Served, keep: Callable[[HttpSender], HttpSender]
) -> None:
    config = sms_provider(f"{provider.url}/sms/bad", retries=2)
    delivery = await keep(HttpSender(config, backoff=FAST)).send(Message(PHONE, TEXT))
    assert (delivery.ok, delivery.detail, delivery.attempts) == (False, "status 400", 1)
    assert len(seen(provider)) == 1
    assert_no_secrets(delivery.detail, API_KEY)


async def test_a_2xx_outside_success_status_is_a_final_failure(
    provider: Served, keep: Callable[[HttpSender], HttpSender]
) -> None:
    config = sms_provider(f"{provider.url}/sms/ok", success_status=(200,), retries=2)
    delivery = await keep(HttpSender(config, backoff=FAST)).send(Message(PHONE, TEXT))
    assert (delivery.ok, delivery.detail, delivery.attempts) == (False, "status 202", 1)


async def test_a_slow_provider_is_uncertain_and_never_asked_twice(
    provider: Served, keep: Callable[[HttpSender], HttpSender]
) -> None:
    """It may have the message already: a retry would text the user twice."""
    config = sms_provider(f"{provider.url}/sms/slow", timeout=0.2, retries=2)
    delivery = await keep(HttpSender(config, backoff=FAST)).send(Message(PHONE, TEXT))
    assert (delivery.ok, delivery.uncertain, delivery.attempts) == (False, True, 1)
    assert delivery.detail.startswith("timed out")
    assert len(seen(provider)) == 1


async def test_a_refused_connection_is_a_failed_delivery(
    closed_port: int, keep: Callable[[HttpSender], HttpSender]
) -> None:
    config = sms_provider(f"http://127.0.0.1:{closed_port}/sms?key={API_KEY}", retries=1)
    delivery = await keep(HttpSender(config, backoff=FAST)).send(Message(PHONE, TEXT))
    assert (delivery.ok, delivery.attempts) == (False, 2)
    assert delivery.detail == "connection failed (ClientConnectorError)"


async def test_an_unexpected_error_is_answered_not_raised(
    keep: Callable[[HttpSender], HttpSender],
) -> None:
    config = sms_provider("http://[::1/sms", retries=2)  # refused by the client itself
    delivery = await keep(HttpSender(config, backoff=FAST)).send(Message(PHONE, TEXT))
    assert (delivery.ok, delivery.attempts) == (False, 1)
    assert delivery.detail.startswith("unexpected ")


async def test_a_closed_sender_sends_nothing(provider: Served) -> None:
    sender = HttpSender(sms_provider(f"{provider.url}/sms/ok"))
    assert (await sender.send(Message(PHONE, TEXT))).ok
    await sender.close()
    delivery = await sender.send(Message(PHONE, TEXT))
    assert (delivery.ok, delivery.attempts) == (False, 0)
    assert len(seen(provider)) == 1


# ---------------------------------------------------------------- Twilio


def twilio_provider(served: Served, **options: Any) -> TwilioProvider:
    options.setdefault("auth_token", TOKEN)
    return TwilioProvider(account_sid=SID, sender="+3197010000000", base_url=served.url, **options)


async def test_twilio_posts_the_form_with_basic_auth(
    provider: Served, keep: Callable[[TwilioSender], TwilioSender]
) -> None:
    sender = keep(TwilioSender(twilio_provider(provider), backoff=FAST))
    delivery = await sender.send(Message(PHONE, TEXT))
    assert (delivery.ok, delivery.provider, delivery.detail, delivery.attempts) == (
        True,
        "twilio",
        "SM" + "a" * 32,
        1,
    )
    [request] = seen(provider)
    assert request.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    scheme, _, credentials = request.headers["Authorization"].partition(" ")
    assert (scheme, base64.b64decode(credentials).decode()) == ("Basic", f"{SID}:{TOKEN}")
    fields = urllib.parse.parse_qs(request.body.decode("ascii"))
    assert fields == {"To": [PHONE], "From": ["+3197010000000"], "Body": [TEXT]}


async def test_twilio_messaging_service_goes_in_its_own_field(
    provider: Served, keep: Callable[[TwilioSender], TwilioSender]
) -> None:
    service = "MG" + "0123456789abcdef" * 2
    config = TwilioProvider(SID, TOKEN, service, base_url=provider.url)
    assert (await keep(TwilioSender(config, backoff=FAST)).send(Message(PHONE, TEXT))).ok
    fields = urllib.parse.parse_qs(seen(provider)[0].body.decode("ascii"))
    assert fields["MessagingServiceSid"] == [service]
    assert "From" not in fields


async def test_twilio_rejection_carries_code_and_message_without_retry(
    provider: Served, keep: Callable[[TwilioSender], TwilioSender]
) -> None:
    provider.app[TWILIO_SCRIPT][:] = ["invalid"]
    delivery = await keep(TwilioSender(twilio_provider(provider), backoff=FAST)).send(
        Message(PHONE, TEXT)
    )
    assert (delivery.ok, delivery.attempts) == (False, 1)
    # The number is personal data: it never reaches a detail (or the log it goes to).
    assert delivery.detail == (
        "status 400, Twilio error 21211: The 'To' number [redacted] is not a valid phone number."
    )
    assert len(seen(provider)) == 1


async def test_twilio_server_errors_are_retried(
    provider: Served, keep: Callable[[TwilioSender], TwilioSender]
) -> None:
    provider.app[TWILIO_SCRIPT][:] = ["busy", "ok"]
    delivery = await keep(TwilioSender(twilio_provider(provider), backoff=FAST)).send(
        Message(PHONE, TEXT)
    )
    assert (delivery.ok, delivery.attempts) == (True, 2)


async def test_twilio_that_stays_down_gets_retries_plus_one_attempts(
    provider: Served, keep: Callable[[TwilioSender], TwilioSender]
) -> None:
    provider.app[TWILIO_SCRIPT][:] = ["busy"]
    config = twilio_provider(provider, retries=1)
    delivery = await keep(TwilioSender(config, backoff=FAST)).send(Message(PHONE, TEXT))
    assert (delivery.ok, delivery.attempts) == (False, 2)
    assert delivery.detail == "status 429, Twilio error 20429: Too Many Requests"


async def test_twilio_server_error_is_final(
    provider: Served, keep: Callable[[TwilioSender], TwilioSender]
) -> None:
    provider.app[TWILIO_SCRIPT][:] = ["error"]
    delivery = await keep(TwilioSender(twilio_provider(provider), backoff=FAST)).send(
        Message(PHONE, TEXT)
    )
    assert (delivery.ok, delivery.attempts) == (False, 1)


async def test_twilio_wrong_token_is_final_and_stays_out_of_the_detail(
    provider: Served, keep: Callable[[TwilioSender], TwilioSender]
) -> None:
    config = twilio_provider(provider, auth_token="wrong-token-value")
    delivery = await keep(TwilioSender(config, backoff=FAST)).send(Message(PHONE, TEXT))
    assert (delivery.ok, delivery.attempts) == (False, 1)
    assert delivery.detail == "status 401, Twilio error 20003: Authenticate"
    assert_no_secrets(delivery.detail, "wrong-token-value", TOKEN)


async def test_twilio_message_echoing_the_text_is_scrubbed(
    provider: Served, keep: Callable[[TwilioSender], TwilioSender]
) -> None:
    provider.app[TWILIO_SCRIPT][:] = ["echo"]
    delivery = await keep(TwilioSender(twilio_provider(provider), backoff=FAST)).send(
        Message(PHONE, TEXT)
    )
    assert not delivery.ok
    assert delivery.detail.startswith("status 400, Twilio error 30007: Message body rejected:")
    assert_no_secrets(delivery.detail, TOKEN)


async def test_twilio_success_without_sid_is_a_failure_not_retried(
    provider: Served, keep: Callable[[TwilioSender], TwilioSender]
) -> None:
    provider.app[TWILIO_SCRIPT][:] = ["no-sid"]
    delivery = await keep(TwilioSender(twilio_provider(provider), backoff=FAST)).send(
        Message(PHONE, TEXT)
    )
    assert (delivery.ok, delivery.detail, delivery.attempts) == (
        False,
        "status 201 without a message sid",
        1,
    )


async def test_twilio_refused_connection_is_a_failed_delivery(
    closed_port: int, keep: Callable[[TwilioSender], TwilioSender]
) -> None:
    config = TwilioProvider(SID, TOKEN, "+3197010000000", f"http://127.0.0.1:{closed_port}", 1, 1)
    delivery = await keep(TwilioSender(config, backoff=FAST)).send(Message(PHONE, TEXT))
    assert (delivery.ok, delivery.attempts) == (False, 2)
    assert delivery.detail.startswith("connection failed")


# ---------------------------------------------------------------- SMTP

MAIL_TO = "alice@example.org"
MAIL_FROM = "signin@example.org"
SUBJECT = "Ваш код для входа"
USER, PASSWORD = "gateway", "smtp-password-value"


class LoopbackController(Controller):
    """aiosmtpd's threaded server on 127.0.0.1:0: learns its port before its own self-test."""

    def __init__(self, handler: object, **options: Any) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=0, **options)

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


@dataclass
class Received:
    envelope: Envelope
    authenticated: bool
    tls: bool


class Inbox:
    """The server's handler: keeps every message; `replies` answer DATA in turn."""

    def __init__(self, *replies: str) -> None:
        self.received: list[Received] = []
        self.replies = list(replies)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert server.transport is not None
        tls = server.transport.get_extra_info("ssl_object") is not None
        self.received.append(Received(envelope, bool(session.authenticated), tls))
        return self.replies.pop(0) if self.replies else "250 2.0.0 Ok: queued as TEST1"


def authenticate(
    server: object, session: Session, envelope: Envelope, mechanism: str, auth_data: object
) -> AuthResult:
    good = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=good, handled=False)  # handled=False: the server answers 535


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., LoopbackController]]:
    started: list[LoopbackController] = []

    def start(handler: Inbox, **options: Any) -> LoopbackController:
        controller = LoopbackController(handler, **options)
        controller.start()
        started.append(controller)
        return controller

    yield start
    for controller in started:
        controller.stop()


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Verifies as usual, trusting this one self-signed certificate as its only CA."""
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crm-gateway test SMTP")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(folder / "cert.pem", folder / "key.pem")


def smtp_provider(port: int, security: str = "none", **options: Any) -> SmtpProvider:
    options.setdefault("sender", f"Sign-in <{MAIL_FROM}>")
    return SmtpProvider(host="127.0.0.1", port=port, security=security, **options)


def mail(to: str = MAIL_TO) -> Message:
    return Message(to, TEXT, SUBJECT)


def read_mail(received: Received) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(
        received.envelope.original_content or b"", policy=email.policy.default
    )
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


async def test_smtp_delivers_a_utf8_text_message(
    smtp_server: Callable[..., LoopbackController],
) -> None:
    inbox = Inbox()
    server = smtp_server(inbox)
    sender = SmtpSender(smtp_provider(server.port), clock=FakeClock(), backoff=FAST)
    delivery = await sender.send(mail())
    await sender.close()
    assert (delivery.ok, delivery.provider, delivery.attempts) == (True, "smtp", 1)
    assert "queued as TEST1" in delivery.detail
    [received] = inbox.received
    assert (received.envelope.mail_from, received.envelope.rcpt_tos) == (MAIL_FROM, [MAIL_TO])
    assert (received.authenticated, received.tls) == (False, False)
    raw = received.envelope.original_content or b""
    assert raw.isascii()  # 7-bit clean: any relay takes it
    parsed = read_mail(received)
    assert (parsed["From"], parsed["To"], parsed["Subject"]) == (
        f"Sign-in <{MAIL_FROM}>",
        MAIL_TO,
        SUBJECT,
    )
    assert parsed["Date"].datetime == datetime.fromtimestamp(1_800_000_000, UTC)  # the clock's
    assert parsed["Message-ID"].endswith("@example.org>")
    assert (parsed.get_content_type(), parsed.get_content_charset()) == ("text/plain", "utf-8")
    assert parsed.get_content().replace("\r\n", "\n") == TEXT + "\n"


async def test_smtp_logs_in_when_configured(
    smtp_server: Callable[..., LoopbackController],
) -> None:
    inbox = Inbox()
    server = smtp_server(inbox, authenticator=authenticate, auth_require_tls=False)
    config = smtp_provider(server.port, username=USER, password=PASSWORD)
    delivery = await SmtpSender(config, backoff=FAST).send(mail())
    assert delivery.ok
    assert inbox.received[0].authenticated


async def test_smtp_wrong_password_is_final_and_stays_out_of_the_detail(
    smtp_server: Callable[..., LoopbackController],
) -> None:
    inbox = Inbox()
    server = smtp_server(inbox, authenticator=authenticate, auth_require_tls=False)
    config = smtp_provider(server.port, username=USER, password="wrong-password-value")
    delivery = await SmtpSender(config, backoff=FAST).send(mail())
    assert (delivery.ok, delivery.attempts) == (False, 1)
    assert delivery.detail.startswith("SMTP 535")
    assert_no_secrets(delivery.detail, "wrong-password-value", PASSWORD)
    assert inbox.received == []


async def test_smtp_starttls_with_a_trusted_certificate(
    smtp_server: Callable[..., LoopbackController], certificate: Certificate
) -> None:
    inbox = Inbox()
    server = smtp_server(
        inbox,
        tls_context=certificate.server_context(),
        require_starttls=True,
        authenticator=authenticate,  # AUTH only after STARTTLS: aiosmtpd's default
    )
    config = smtp_provider(server.port, "starttls", username=USER, password=PASSWORD)
    sender = SmtpSender(config, backoff=FAST, tls_context=certificate.client_context())
    delivery = await sender.send(mail())
    assert delivery.ok, delivery.detail
    [received] = inbox.received
    assert (received.authenticated, received.tls) == (True, True)
    assert read_mail(received)["Subject"] == SUBJECT


async def test_smtp_starttls_refuses_an_untrusted_certificate(
    smtp_server: Callable[..., LoopbackController], certificate: Certificate
) -> None:
    inbox = Inbox()
    server = smtp_server(inbox, tls_context=certificate.server_context(), require_starttls=True)
    delivery = await SmtpSender(smtp_provider(server.port, "starttls"), backoff=FAST).send(mail())
    assert (delivery.ok, delivery.attempts) == (False, 1)
    assert delivery.detail == "the server's TLS certificate is not trusted"
    assert inbox.received == []


async def test_smtp_starttls_not_offered_is_final(
    smtp_server: Callable[..., LoopbackController],
) -> None:
    inbox = Inbox()
    server = smtp_server(inbox)
    delivery = await SmtpSender(smtp_provider(server.port, "starttls"), backoff=FAST).send(mail())
    assert (delivery.ok, delivery.attempts) == (False, 1)
    assert "STARTTLS" in delivery.detail
    assert inbox.received == []


async def test_smtp_implicit_tls(
    smtp_server: Callable[..., LoopbackController], certificate: Certificate
) -> None:
    inbox = Inbox()
    server = smtp_server(inbox, ssl_context=certificate.server_context())
    sender = SmtpSender(
        smtp_provider(server.port, "tls"), backoff=FAST, tls_context=certificate.client_context()
    )
    delivery = await sender.send(mail())
    assert delivery.ok, delivery.detail
    assert inbox.received[0].tls


async def test_smtp_transient_reply_is_retried(
    smtp_server: Callable[..., LoopbackController],
) -> None:
    inbox = Inbox("451 4.3.0 Try again later")
    server = smtp_server(inbox)
    delivery = await SmtpSender(smtp_provider(server.port), backoff=FAST).send(mail())
    assert (delivery.ok, delivery.attempts) == (True, 2)
    assert len(inbox.received) == 2


async def test_smtp_permanent_reply_is_final(
    smtp_server: Callable[..., LoopbackController],
) -> None:
    inbox = Inbox(*["554 5.7.1 Rejected"] * 3)
    server = smtp_server(inbox)
    delivery = await SmtpSender(smtp_provider(server.port), backoff=FAST).send(mail())
    assert (delivery.ok, delivery.attempts, delivery.detail) == (
        False,
        1,
        "SMTP 554: 5.7.1 Rejected",
    )


async def test_smtp_refused_connection_is_a_failed_delivery(closed_port: int) -> None:
    config = smtp_provider(closed_port, retries=1)
    delivery = await SmtpSender(config, backoff=FAST).send(mail())
    assert (delivery.ok, delivery.attempts) == (False, 2)
    assert delivery.detail == "connection failed (SMTPConnectError)"


async def test_smtp_line_break_in_a_header_is_refused_before_connecting(closed_port: int) -> None:
    delivery = await SmtpSender(smtp_provider(closed_port)).send(
        mail(f"{MAIL_TO}\r\nBcc: mallory@example.org")
    )
    assert (delivery.ok, delivery.attempts) == (False, 0)
    assert delivery.detail == "cannot compose the message (ValueError)"


# ---------------------------------------------------------------- outbox


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


async def test_outbox_appends_one_json_line_per_message(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "outbox.jsonl"
    clock = FakeClock()
    sender = OutboxSender(OutboxProvider(str(path)), clock=clock, channel="sms")
    first = await sender.send(Message(PHONE, TEXT))
    clock.advance(30)
    await sender.send(Message(MAIL_TO, "second", SUBJECT))
    await sender.close()
    assert (first.ok, first.provider, first.attempts) == (True, "outbox", 1)
    assert read_lines(path) == [
        {"time": 1_800_000_000.0, "to": PHONE, "subject": "", "text": TEXT, "channel": "sms"},
        {
            "time": 1_800_000_030.0,
            "to": MAIL_TO,
            "subject": SUBJECT,
            "text": "second",
            "channel": "sms",
        },
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_outbox_leaves_channel_out_when_not_given(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    await OutboxSender(OutboxProvider(str(path)), clock=FakeClock()).send(Message(PHONE, TEXT))
    assert set(read_lines(path)[0]) == {"time", "to", "subject", "text"}


async def test_outbox_tightens_an_existing_file_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    path.write_text("")
    path.chmod(0o644)
    assert (await OutboxSender(OutboxProvider(str(path))).send(Message(PHONE, TEXT))).ok
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_concurrent_sends_write_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    sender = OutboxSender(OutboxProvider(str(path)))
    # Long lines of different sizes, so a torn write would show as an unparsable line.
    texts = [f"{n:04d}:" + chr(0x41 + n % 26) * (n * 997 % 60_000) for n in range(120)]
    deliveries = await asyncio.gather(*(sender.send(Message(PHONE, t)) for t in texts))
    assert all(d.ok for d in deliveries)
    lines = read_lines(path)
    assert sorted(line["text"] for line in lines) == sorted(texts)


async def test_outbox_that_cannot_be_written_is_a_failed_delivery(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    sender = OutboxSender(OutboxProvider(str(tmp_path / "a-file" / "outbox.jsonl")))
    delivery = await sender.send(Message(PHONE, TEXT))
    assert (delivery.ok, delivery.provider) == (False, "outbox")
    assert delivery.detail.startswith("cannot write the outbox: ")
    assert_no_secrets(delivery.detail)


# ---------------------------------------------------------------- registry


async def test_open_sender_picks_the_sender_by_provider_type(tmp_path: Path) -> None:
    providers: list[tuple[Provider, type[Sender], str]] = [
        (HttpProvider(url="http://127.0.0.1:9/sms"), HttpSender, "http"),
        (TwilioProvider(SID, TOKEN, "+3197010000000"), TwilioSender, "twilio"),
        (SmtpProvider(host="127.0.0.1", sender=MAIL_FROM), SmtpSender, "smtp"),
        (OutboxProvider(str(tmp_path / "outbox.jsonl")), OutboxSender, "outbox"),
    ]
    for config, kind, name in providers:
        sender = open_sender(config, clock=FakeClock(), channel="sms")
        assert isinstance(sender, kind)
        assert sender.name == name
        await sender.close()


async def test_open_sender_outbox_uses_the_given_clock_and_channel(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    sender = open_sender(OutboxProvider(str(path)), clock=FakeClock(), channel="email")
    assert (await sender.send(Message(MAIL_TO, TEXT, SUBJECT))).ok
    [line] = read_lines(path)
    assert (line["time"], line["channel"]) == (1_800_000_000.0, "email")
    assert os.stat(path).st_size > 0
