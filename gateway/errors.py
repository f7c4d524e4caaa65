"""The whole exception tree of the gateway; foreign errors are translated where they enter.

    GatewayError
    ├── ConfigError            config or policy files are invalid (carries every Problem)
    ├── Refused                `backup` or `restore` stops: a reason code and an exit status
    ├── KeyProblem             a key line that cannot be used (also a ValueError)
    ├── SealBroken             sealed data that does not open (also a ValueError)
    ├── BadArgument            a command's option that cannot be used (also a ValueError)
    ├── PasskeyRefused         a passkey's answer refused: a reason code (becomes a Verdict)
    ├── DetectionFailed        detect-login or doctor cannot read the CRM (one sentence)
    │   └── SeveralForms           a page with more than one login form: which one?
    ├── Ambiguous              a request some server reads another way (also a ValueError)
    │   ├── AmbiguousField         a form or query field
    │   ├── AmbiguousLogin         the CRM's login request
    │   └── AmbiguousCredential    an API credential
    └── HttpError              ends a request with a status and a stable reason code
        ├── BadRequest             the client sent something we refuse to interpret (400)
        ├── PayloadTooLarge        a body we must read whole is over its limit (413)
        ├── AccessDenied           the policy refused (403; 401 unknown token, 400 ambiguous)
        ├── SignInRequired         an API client with no session or token (401)
        ├── CsrfFailed             one of our forms without its token (403)
        ├── NotFound, MethodNotAllowed   under the gateway's own prefix (404, 405)
        ├── StoreUnavailable       a state store did not answer: fail closed (503)
        └── UpstreamError          the CRM could not give an answer
            ├── UpstreamUnavailable    refused, reset or malformed before a response (502)
            └── UpstreamTimeout        no answer within the configured time (504)

Each HTTP-facing error has a stable `reason` code: the log and JSON bodies carry it,
pages show a translated sentence instead.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.model import Decision


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file, located precisely for the operator."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class GatewayError(Exception):
    """Base of everything the gateway raises on purpose."""


class ConfigError(GatewayError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line))
        super().__init__("\n".join(str(p) for p in problems))


class Refused(GatewayError):
    """Why a backup or restore stops: a sentence for the person, a reason code for scripts and
    the audit trail, and the exit status (1 failed, 2 the configuration is wrong)."""

    def __init__(self, reason: str, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class PasskeyRefused(GatewayError):
    """A browser's passkey answer (WebAuthn) refused: `reason` a stable code for the page, the
    audit trail and the metrics; `detail` what the answer showed, for the operator. Raised and
    caught inside gateway.factors.webauthn, which answers with a Verdict or a Registered."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class KeyProblem(GatewayError, ValueError):
    """A key line that cannot be used; the message says which and why (no key material)."""


class SealBroken(GatewayError, ValueError):
    """Sealed data that does not open: tampered, truncated, or under a key we no longer hold."""


class BadArgument(GatewayError, ValueError):
    """An option that cannot be used; the message names it and says what it expects."""


class DetectionFailed(GatewayError):
    """detect-login or doctor cannot go on with the CRM (no answer, a 500, no login form, a
    login it cannot read): the message says what was seen and what to do."""


class SeveralForms(DetectionFailed):
    """A page with several login forms: `choices` describes each, numbered from 1."""

    def __init__(self, message: str, choices: tuple[str, ...]) -> None:
        super().__init__(message)
        self.choices = choices


class Ambiguous(GatewayError, ValueError):
    """A request that cannot be read one way only: the gateway would judge one reading and
    the CRM could act on another. The message is for the operator."""


class AmbiguousField(Ambiguous):
    """A field some server reads differently from us."""


class AmbiguousLogin(Ambiguous):
    """The CRM's login request: which user it names."""


class AmbiguousCredential(Ambiguous):
    """The request's API credential (the message says why)."""


class HttpError(GatewayError):
    """An error that ends a request with a status; `reason` is the stable code."""

    status = 500
    reason = "internal_error"

    def __init__(self, detail: str = "", *, reason: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        self.detail = detail
        super().__init__(detail or self.reason)


class BadRequest(HttpError):
    status = 400
    reason = "bad_request"


class ExpectationFailed(HttpError):
    """An `Expect` other than 100-continue (RFC 9110 §10.1.1): refused, never forwarded."""

    status = 417
    reason = "expectation_failed"


class PayloadTooLarge(HttpError):
    """A body the gateway must read whole (the CRM's login form) is over its limit."""

    status = 413
    reason = "login_too_large"


class UnsupportedEncoding(HttpError):
    """A body the gateway must read to judge (a login, a form that may name one or override
    the method) sent with a Content-Encoding: its fields cannot be read as the CRM may
    decode them, so it goes no further (RFC 9110 §15.5.16)."""

    status = 415
    reason = "body_encoded"


class LoginInBody(PayloadTooLarge):
    """A body over login.max_body, let stream to the login's path (a signed-in user's
    upload), named the CRM's login after all (gateway.signin.formscan): its last bytes
    never reached the CRM, and the password in it was never checked."""


class AccessDenied(HttpError):
    """The policy refused: 403, or 401 for an unknown API token and 400 for a request read
    two ways. `api`: answered with JSON whatever the client accepts."""

    status = 403
    reason = "access_denied"

    def __init__(self, decision: Decision, *, api: bool) -> None:
        super().__init__(decision.reason, reason=decision.reason)
        self.decision = decision
        self.api = api
        if decision.reason == "token_unknown":
            self.status = 401
        elif decision.reason in ("credential_ambiguous", "method_ambiguous"):
            self.status = 400


class SignInRequired(HttpError):
    status = 401
    reason = "signin_required"


class CsrfFailed(HttpError):
    status = 403
    reason = "csrf_failed"


class NotFound(HttpError):
    status = 404
    reason = "not_found"


class MethodNotAllowed(HttpError):
    status = 405
    reason = "method_not_allowed"


class StoreUnavailable(HttpError):
    status = 503
    reason = "store_unavailable"


class UpstreamError(HttpError):
    status = 502
    reason = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    status = 502
    reason = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    reason = "upstream_timeout"


class UpstreamCut(asyncio.CancelledError):
    """The CRM's answer broke off after its headers were sent on: the request ends as a
    cancelled one (nothing more may be written), and carries the status the client got,
    for the access log and the metrics (gateway.web.scope): not the 499 of a client that
    left. A CancelledError, so nothing between here and the scope answers it."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status
