"""Where a code goes and how that is shown: masked phone numbers and e-mail addresses, and the
message text in the user's language (a template from gateway.yaml, else the catalog)."""

from __future__ import annotations

from gateway.config.messaging import Channel
from gateway.i18n import translate

_DOT = "•"


def mask_phone(e164: str) -> str:
    """`+31612345678` → `+31 6 •••• ••78`: the country, the first digit and the last two."""
    import phonenumbers  # here: about 1 MB of memory that a gateway without SMS never needs

    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return _DOT * 6
    shown = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    country, _, national = shown.partition(" ")
    digits = [i for i, c in enumerate(national) if c.isdigit()]
    keep = {digits[0], *digits[-2:]} if len(digits) > 4 else set(digits[-1:])
    masked = "".join(c if not c.isdigit() or i in keep else _DOT for i, c in enumerate(national))
    return f"{country} {masked}"


def mask_email(address: str) -> str:
    """`alice@example.com` → `a••••@example.com`."""
    local, at, domain = address.partition("@")
    if not at:
        return _DOT * 6
    return f"{local[:1]}{_DOT * max(3, len(local) - 1)}@{domain}"


def message_text(channel: Channel, kind: str, language: str, **values: object) -> str:
    """The SMS text or e-mail body (`kind` "sms" or "email"), in the configured template for
    the language, else the catalog's."""
    template = channel.texts.get(language) or channel.texts.get("en")
    if template is not None:
        return (
            template.replace("{code}", str(values["code"]))
            .replace("{minutes}", str(values.get("minutes", "")))
            .replace("{product}", str(values.get("product", "")))
        )
    return translate(language, f"{kind}.text", **values)


def message_subject(channel: Channel, language: str, **values: object) -> str:
    template = channel.subjects.get(language) or channel.subjects.get("en")
    if template is not None:
        return template.replace("{product}", str(values.get("product", "")))
    return translate(language, "email.subject", **values)
