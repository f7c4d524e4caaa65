"""What every second factor is to the rest of the gateway: the SecondFactor Protocol and the
values it speaks in. A factor says what it needs on file, how a user adds it, what the
challenge page shows for it and whether an answer is right; nothing here knows HTTP.

Adding a factor: a module implementing SecondFactor, its name in gateway.model.FACTOR_NAMES,
a line in gateway.factors.registry.build_factors, its part of the challenge page
(web/pages/templates/factors/NAME.html) and its texts in the catalogs (gateway.i18n); the
steps in full are docs/architecture.md "Adding a second factor".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking an answer. Wrong, expired or replayed answers are verdicts,
    never exceptions; a store that fails raises (StoreUnavailable)."""

    ok: bool
    # "ok", "wrong_code", "replayed", "locked", "code_expired", "no_authenticator", or a
    # factor's own refusal (a passkey's: gateway.factors.webauthn); the challenge page shows
    # `challenge.<reason>` (`wrong_answer` for wrong_code).
    reason: str
    locked_until: float = 0.0
    detail: str = ""  # for the audit trail: what the answer showed (a passkey's wrong origin)

    @classmethod
    def wrong(cls, until: float) -> Verdict:
        return cls(False, "locked" if until else "wrong_code", until)


@dataclass(frozen=True)
class Answer:
    """What a user typed on the challenge page, and where it came from."""

    user: str
    code: str
    ip: str
    sign_in: str  # the session that asked: a code sent for one sign-in works only there


@dataclass(frozen=True)
class Prompt:
    """What the challenge page shows before an answer (codes sent by message: where to, and
    whether one is waiting); empty for a factor the user answers from what they hold."""

    to: str = ""  # the masked phone number or address a code goes to
    pending: bool = False  # a code was sent for this sign-in and can be typed now
    minutes: int = 0  # how long a sent code works
    missing: bool = False  # nothing on file to send to: the page says whom to ask
    # What the page's script hands the browser for this sign-in (WebAuthn request options,
    # JSON); asking for it starts a new challenge, so a prompt is made once per page shown.
    options: str = ""


class SecondFactor(Protocol):
    """One way to pass the second step."""

    @property
    def name(self) -> str:
        """What the policy, URLs, the audit trail and the metrics call it ("totp")."""
        ...

    @property
    def enrol_page(self) -> str:
        """The gateway page where a user adds it ("enrol"), or "" when a user adds nothing
        (an administrator puts the phone on file; recovery codes come with an app)."""
        ...

    @property
    def sends(self) -> bool:
        """A code must be asked for and sent before it can be answered (SMS, e-mail)."""
        ...

    @property
    def wrong_answer(self) -> str:
        """The catalog key of the sentence a user reads after a wrong answer."""
        ...

    @property
    def preselect(self) -> bool:
        """Once passed, offer it first at the user's next sign-in (not for a last resort
        such as recovery codes)."""
        ...

    def offerable(self) -> bool:
        """This gateway can offer it at all (SMS needs a provider configured)."""
        ...

    async def on_file(self, user: str) -> bool:
        """What it needs is on file for this user: an app, codes left, a phone number."""
        ...

    async def prompt(self, user: str, sign_in: str) -> Prompt:
        """What the challenge page shows for it before an answer."""
        ...

    async def check(self, answer: Answer) -> Verdict:
        """Whether the answer is right: counted against the limits before it is checked,
        good once."""
        ...
