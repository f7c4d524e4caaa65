"""E-mail codes over SMTP with aiosmtplib: STARTTLS, implicit TLS or plain, optional login.
SMTP's own split decides retries: 4yz replies and lost connections are transient, 5yz final.
"""

from __future__ import annotations

import asyncio
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

from gateway.clock import Clock, SystemClock
from gateway.config.messaging import SmtpProvider
from gateway.senders.protocols import Delivery, Message
from gateway.senders.retry import Outcome, deliver, secrets_of


def _is_transient(code: int) -> bool:
    return 400 <= code < 500  # RFC 5321 §4.2.1: 4yz is a transient negative completion


def _untrusted_certificate(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class SmtpSender:
    name = "smtp"

    def __init__(
        self,
        provider: SmtpProvider,
        *,
        clock: Clock | None = None,
        backoff: float = 0.5,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        """`tls_context` replaces the system's verified defaults (a private CA, tests)."""
        self._provider = provider
        self._clock = clock or SystemClock()
        self._backoff = backoff
        self._tls_context = tls_context

    def compose(self, message: Message) -> EmailMessage:
        """The e-mail: text/plain UTF-8, quoted-printable so any relay accepts it as 7-bit."""
        email = EmailMessage()  # the default policy refuses CR/LF in header values
        email["From"] = self._provider.sender
        email["To"] = message.to
        email["Subject"] = message.subject
        email["Date"] = formatdate(self._clock.now(), usegmt=True)
        domain = self._envelope_sender().rpartition("@")[2] or None
        email["Message-ID"] = make_msgid(domain=domain)
        email.set_content(message.text, charset="utf-8", cte="quoted-printable")
        return email

    def _envelope_sender(self) -> str:
        return parseaddr(self._provider.sender)[1] or self._provider.sender

    async def send(self, message: Message) -> Delivery:
        provider = self._provider
        try:
            email = self.compose(message)
        except ValueError as exc:  # a recipient or subject with a line break, say
            detail = f"cannot compose the message ({type(exc).__name__})"
            return Delivery(ok=False, provider=self.name, detail=detail, attempts=0)

        # aiosmtplib is imported at the first e-mail, not with the gateway: about 0.4 MB of
        # every worker's memory, which only a gateway sending codes by e-mail needs.
        import aiosmtplib

        async def attempt() -> Outcome:
            try:
                async with asyncio.timeout(provider.timeout):  # the whole attempt, not each step
                    _, reply = await aiosmtplib.send(
                        email,
                        sender=self._envelope_sender(),
                        recipients=[message.to],
                        hostname=provider.host,
                        port=provider.port,
                        username=provider.username or None,
                        password=provider.password or None,
                        use_tls=provider.security == "tls",
                        # False, not None: "none" must not upgrade opportunistically either.
                        start_tls=provider.security == "starttls",
                        tls_context=self._tls_context,
                        timeout=provider.timeout,
                    )
            except aiosmtplib.SMTPRecipientsRefused as exc:
                codes = [refused.code for refused in exc.recipients]
                return Outcome(
                    ok=False,
                    detail=f"recipient refused ({', '.join(map(str, codes))})",
                    transient=bool(codes) and all(_is_transient(c) for c in codes),
                )
            except aiosmtplib.SMTPResponseException as exc:  # incl. authentication, greeting
                return Outcome(
                    ok=False,
                    detail=f"SMTP {exc.code}: {exc.message}",
                    transient=_is_transient(exc.code),
                )
            except OSError as exc:
                if _untrusted_certificate(exc):
                    return Outcome(ok=False, detail="the server's TLS certificate is not trusted")
                raise  # refused, reset, timed out: transient, `deliver` retries
            except aiosmtplib.SMTPException as exc:  # no STARTTLS or AUTH offered, say
                return Outcome(ok=False, detail=f"{type(exc).__name__}: {exc.message}")
            return Outcome(ok=True, detail=reply)

        return await deliver(
            self.name,
            attempt,
            retries=provider.retries,
            backoff=self._backoff,
            transient=(OSError,),
            secrets=[*secrets_of(message), provider.password],
        )

    async def close(self) -> None:
        """Nothing to release: every send opens and closes its own connection."""
