"""Recognises the gateway's reserved path prefix however a client spells it.

`/_GATEWAY/x`, `/%5fgateway/x`, `//_gateway/x` and `/a/../_gateway/x` all belong to the
gateway and are never proxied (PN-2): the CRM can never serve content under the prefix.
Full normalisation of proxied paths belongs to the policy layer, not here.
"""

from __future__ import annotations

from urllib.parse import unquote


def _canonical(raw_path: str) -> str:
    path = raw_path.split("?", 1)[0].split("#", 1)[0]
    if "%" in path:
        path = unquote(path, errors="replace")
    path = path.replace("\\", "/")
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return "/" + "/".join(segments) + ("/" if path.endswith("/") and segments else "")


def reserved_subpath(raw_path: str, prefix: str) -> str | None:
    """The part after the prefix (`healthz`) when the path is the gateway's, else None."""
    # Fast path for ordinary CRM paths: nothing that could decode, fold or climb into the prefix.
    # Without percent-escapes or backslashes, decoding changes no letter, so a path that is the
    # gateway's must contain the prefix's last segment literally, whatever slashes or dot
    # segments stand around it.
    last = prefix.rstrip("/").rsplit("/", 1)[-1].lower()
    if last not in raw_path.lower() and "%" not in raw_path and "\\" not in raw_path:
        return None
    canonical = _canonical(raw_path)
    bare = prefix.rstrip("/")
    if canonical.lower() == bare.lower():
        return ""
    if canonical.lower().startswith(prefix.lower()):
        return canonical[len(prefix) :]
    return None


_MAX_RETURN = 2048


def safe_return_path(value: str) -> str | None:
    """`value` when it is a same-origin relative path a browser cannot read as another site;
    else None. Refused: `//evil`, `/\\evil`, `https:evil`, and their percent-encoded, tab,
    newline and control-character variants (browsers drop tabs and newlines from URLs, so
    `/\\t/evil` is `//evil`)."""
    if not value or len(value) > _MAX_RETURN or not value.startswith("/"):
        return None
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value) or "\\" in value:
        return None
    decoded = value
    for _ in range(3):  # a path may be decoded more than once on its way (%252f)
        decoded = unquote(decoded)
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in decoded) or "\\" in decoded:
            return None
        if decoded.startswith("//") or not decoded.startswith("/"):
            return None
    if value.startswith("//"):
        return None
    return value
