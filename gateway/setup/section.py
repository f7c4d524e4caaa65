"""The `login:` section detect-login prints, ready to paste into gateway.yaml: each value
with a comment saying how it was found, and what could not be decided said in the section
itself, so a pasted section never hides it. Also the plain-language account that goes with it."""

from __future__ import annotations

import json
import re

from gateway.setup.detect import Detection

_PLAIN = re.compile(r"^[A-Za-z0-9_/][A-Za-z0-9_./?=&%\[\]-]*$")
_YAML_WORDS = frozenset({"yes", "no", "true", "false", "on", "off", "null", "y", "n", "~"})
_COLUMN = 42  # where the comments start, when the value leaves room


def scalar(text: str) -> str:
    """A YAML scalar for `text`: plain when YAML reads it back as this very string."""
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS and not text.isdigit():
        return text
    return json.dumps(text)


def _flow(text: str) -> str:
    """Inside [ ]: only the plainest text goes unquoted (`?`, `:`, `,` end a flow scalar)."""
    return (
        text
        if re.fullmatch(r"[A-Za-z0-9_.-]+", text) and scalar(text) == text
        else json.dumps(text)
    )


def _line(indent: int, key: str, value: str, note: str) -> str:
    start = f"{' ' * indent}{key}: {value}"
    if not note:
        return start
    return f"{start.ljust(_COLUMN - 1)} # {note}"


def render(found: Detection, when: str) -> str:
    """The section, as YAML text with comments."""
    notes = found.notes
    lines = [f"# crm-gateway detect-login, {found.upstream}, {when}"]
    if not found.complete:
        lines.append('# NOT COMPLETE: see "could not decide" below; doctor will fail until it is')
    lines.append("login:")
    lines.append(_line(2, "mode", "upstream", "the CRM checks the password; the gateway watches"))
    lines.append(_line(2, "path", scalar(found.path), notes.get("path", "")))
    lines.append(_line(2, "method", found.method, notes.get("method", "")))
    field = scalar(found.username_field)
    lines.append(_line(2, "username_field", field, notes.get("username_field", "")))
    signals = found.signals
    if signals is None:
        lines.append(
            "  # success: {status: [...], cookie: ...}   could not decide: give --user NAME"
        )
    else:
        lines.append("  success:")
        status = "[" + ", ".join(str(s) for s in signals.status) + "]"
        lines.append(_line(4, "status", status, notes.get("status", "")))
        lines.append(_line(4, "cookie", scalar(signals.cookie), notes.get("cookie", "")))
        if signals.failure_location:
            where = scalar(signals.failure_location)
            lines.append(_line(4, "failure_location", where, notes.get("failure_location", "")))
        kept = "[" + ", ".join(_flow(c) for c in signals.crm_cookies) + "]"
        lines.append(_line(2, "crm_cookies", kept, notes.get("crm_cookies", "")))
    login = found.login()
    if login is not None and login.logout_path:
        lines.append("  logout:")
        lines.append(_line(4, "path", scalar(login.logout_path), notes.get("logout", "")))
        lines.append(_line(4, "method", login.logout_method, ""))
    elif signals is not None:
        lines.append("  # logout: could not decide (see below); without it the CRM's logout")
        lines.append("  # leaves the gateway's session open until it times out")
    for problem in found.undecided:
        lines.append(f"  # could not decide: {problem}")
    return "\n".join(lines) + "\n"


def account(found: Detection) -> list[str]:
    """What was found and what was not, in sentences, for the person who runs it."""
    kind = {"form": "a login form", "two-step": "a two-step login", "json": "a JSON login API"}
    said = [f"Found {kind[found.entry.kind]}: {found.entry.how}."]
    said += [f"- {finding}" for finding in found.findings]
    if found.undecided:
        said.append("Could not decide:")
        said += [f"- {problem}" for problem in found.undecided]
    return said
