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
