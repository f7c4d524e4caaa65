"""Paths, normalised once: the form that is judged is the form that is forwarded.

The rule (shared/reference/security-tests.md PN-1): percent-escapes of unreserved characters
are decoded, dot segments resolved, duplicate slashes merged; anything ambiguous — an encoded
slash, backslash, NUL, `#` or `?`, a `;` path parameter, control characters, invalid or
overlong UTF-8, a `..` above the root — is refused with 400. Rules match the path only, never
the query, and case-sensitively, unless the CRM's web server ignores case (IIS and other
Windows servers; `upstream.case_insensitive_paths`): then rules match the path as Windows
compares names (fold_case), and the spellings Windows reads as another name are refused
(windows_aliases).
"""

from __future__ import annotations

import re
from functools import lru_cache

from gateway.errors import BadRequest

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_REFUSED_ESCAPES = {"2F", "5C", "00", "23", "3F", "3B"}  # / \ NUL # ? ;
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def _bad(why: str) -> BadRequest:
    return BadRequest(why, reason="path_ambiguous")


@lru_cache(maxsize=16384)
def normalize_path(path: str) -> str:
    """The canonical form of a request path (no query), or BadRequest."""
    if not path.startswith("/"):
        raise _bad("path must start with /")
    # A raw `#` reaches us in aiohttp's raw_path; a backend may end the path there, so a rule
    # would judge `/admin#/x` while the CRM serves `/admin`.
    if any(c in path for c in "\\;#") or any(ord(c) < 0x21 or ord(c) == 0x7F for c in path):
        raise _bad("backslash, path parameter, fragment or control character in path")
    try:
        path.encode("utf-8")  # raw non-UTF-8 bytes arrive as surrogate escapes
    except UnicodeEncodeError:
        raise _bad("invalid UTF-8 in path") from None
    if "%" in path:
        if path.count("%") != len(_ESCAPE.findall(path)):
            raise _bad("malformed percent-escape")
        raw = bytearray()
        for piece in re.split(r"(%[0-9A-Fa-f]{2})", path):
            if piece.startswith("%") and len(piece) == 3:
                raw.append(int(piece[1:], 16))
            else:
                raw.extend(piece.encode("utf-8"))
        try:
            raw.decode("utf-8", errors="strict")  # overlong forms (%c0%ae) are invalid UTF-8
        except UnicodeDecodeError:
            raise _bad("invalid or overlong UTF-8 in path") from None

        def decode(match: re.Match[str]) -> str:
            hexed = match.group(1).upper()
            if hexed in _REFUSED_ESCAPES:
                raise _bad(f"encoded %{hexed} in path")
            char = chr(int(hexed, 16))
            if int(hexed, 16) < 0x20 or hexed == "7F":
                raise _bad("encoded control character in path")
            return char if char in _UNRESERVED else f"%{hexed}"

        path = _ESCAPE.sub(decode, path)
    segments: list[str] = []
    parts = path.split("/")
    for segment in parts[1:]:
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                raise _bad("path climbs above the root")
            segments.pop()
            continue
        segments.append(segment)
    trailing = parts[-1] in ("", ".", "..") and bool(segments)
    return "/" + "/".join(segments) + ("/" if trailing else "")


# Windows compares names by upper-casing each UTF-16 unit on its own (NTFS's upcase table,
# .NET's OrdinalIgnoreCase): Unicode's simple one-to-one mapping, so `ß` stays `ß` (not
# `SS`), `ſ` is `S` and `ᾳ` is `ᾼ`, in the Basic Multilingual Plane (Windows maps no other
# plane). Python's str.upper() is the full mapping; where that is two letters or more, the
# simple mapping is the title-case letter when there is one (the Greek iota subscripts),
# else none.
def _simple_upper(char: str) -> str:
    upper = char.upper()
    return upper if len(upper) == 1 else (title if len(title := char.title()) == 1 else char)


@lru_cache(maxsize=1)
def _windows_upper() -> dict[int, int]:
    """The table, built at the first name that is not ASCII (a walk of the whole plane: about
    10 ms, which no worker or CLI command pays at import, and most never pay)."""
    return {
        cp: ord(upper)
        for cp in range(0x10000)
        if not 0xD800 <= cp < 0xE000 and (upper := _simple_upper(chr(cp))) != chr(cp)
    }


_ESCAPES = re.compile(r"(?:%[0-9A-F]{2})+")


def fold_case(text: str) -> str:
    """A path or a rule's pattern in the one case Windows compares names in: two names IIS
    serves as one fold to the same text. ASCII text is upper-cased in C (the simple mapping
    sends a-z to A-Z and nothing else of ASCII anywhere): most paths, on every request."""
    if text.isascii():
        return text.upper()
    return text.translate(_windows_upper())


def match_form(path: str, fold: bool = False) -> str:
    """What rules are matched against, never what is forwarded: the normalised path with the
    escapes normalize_path keeps decoded (`%C3%A9` is `é`, `%21` is `!`, as the CRM reads
    them: a rule written `/økonomi/**` or `/a!b` must hold for every spelling), in Windows's
    one case when `fold` (a CRM on IIS). A decoded `%25` is a `%` no pattern can hold."""
    if "%" in path:
        path = _ESCAPES.sub(lambda m: bytes.fromhex(m.group(0).replace("%", "")).decode(), path)
    return fold_case(path) if fold else path


# A segment naming a script that a web server runs for a longer path too: PHP (Debian's
# packages run .phar and .phtml alike), CGIs (FastCGI, Perl, Python), ColdFusion, ASP, ASP.NET
# pages, handlers and WCF services, and ISAPI extensions run /admin.php for /admin.php/x. A
# segment with an `@` is an e-mail address (`jan@firma.pl`), never a script's name.
_SCRIPT_SEGMENT = re.compile(
    r"(?i)\.(?:php\d?|phtml|phar|f?cgi|pl|py|cfml?|aspx?|asmx|ashx|axd|svc|dll|exe)(?=/)"
)
# Extensions that are also country domains (Poland, Paraguay): such a segment is a script only
# where a rule names it (AMBIGUOUS_SCRIPT), not one that default deny refuses.
AMBIGUOUS_SCRIPT = re.compile(r"(?i)\.p[ly]\Z")
# Apache's default `ScriptAlias /cgi-bin/` runs any file there, with or without an extension.
_CGI_BIN = re.compile(r"(?i)/cgi-bin/[^/]+(?=/)")
# nginx's `location ~ \.php` with `fastcgi_split_path_info ^(.+\.php)(.*)$` (an unanchored
# split, in many guides) runs /admin.php for /admin.php.bak or /admin.phpx too.
_PHP_SPLIT = re.compile(r"(?i)\.php(?=[^/])")
# The index scripts a folder runs by default in a PHP or ASP.NET CRM (nginx's and Apache's
# `index index.php`, IIS's default document); and the name of any index file a rule may name
# (Apache's DirectoryIndex, a Tomcat welcome file): /admin/ runs /admin/index.php.
INDEX_NAMES = ("index.php", "default.aspx")
INDEX_FILE = re.compile(r"(?i)(?:index|default)\.[^/]+\Z")
# Index names a wildcard segment is tried on: the defaults and those Apache, Tomcat and CGI
# setups add.
_INDEX_SAMPLES = (*INDEX_NAMES, "index.html", "index.cgi", "index.jsp")


def may_name_an_index(segment: str) -> bool:
    """Whether a pattern's last segment may match a folder's index file: `index.php`,
    `Default.aspx`, or a wildcard that one of the usual index names fits (`*.php`, `i*`, `*`),
    in any case (a rule on a Windows server's CRM is matched folded)."""
    if "*" not in segment:
        return bool(INDEX_FILE.match(segment))
    glob = folded_glob("/" + segment, True)
    return any(glob.match(fold_case("/" + name)) for name in _INDEX_SAMPLES)


def script_paths(path: str) -> list[str]:
    """The scripts a web server may run for `path`, a normalised path: each segment but the
    last that names one, with what comes before it (`/crm/admin.php/x` gives `/crm/admin.php`;
    `/a.php/b.php/c` both, as Apache takes the first file and nginx's usual split the last),
    a file under `/cgi-bin/`, and a `.php` followed by more in its segment (`/admin.php.bak`:
    nginx's unanchored split). Shortest first."""
    if "." not in path and "/cgi-bin/" not in path.lower():
        return []
    found = {
        script
        for m in _SCRIPT_SEGMENT.finditer(path)
        if "@" not in (script := path[: m.end()]).rpartition("/")[2]
    }
    found.update(path[: m.end()] for m in _PHP_SPLIT.finditer(path))
    found.update(path[: m.end()] for m in _CGI_BIN.finditer(path))
    return sorted(found, key=len)


# A segment whose last character is a dot or a space (`/admin.`, `/admin%20`: Windows drops
# them, so IIS serves `/admin`), that names an NTFS stream (`/admin::$DATA`, `%3A` too: `:`
# has no other use in a Windows name) or an 8.3 short name (`/ADMINI~1` for `/administration`).
# ASP.NET (Framework) also drops a cookieless-session segment (`/(S(x))/admin.aspx` runs
# `/admin.aspx`, CVE-2023-36899's way past a rule), raw or escaped.
_WINDOWS_ALIAS = re.compile(
    r"(?:\.|%20)(?:/|\Z)|:|%3A|~[0-9]|/(?:\(|%28)[A-Za-z](?:\(|%28)", re.IGNORECASE
)


def judged_path(raw_path: str, fold: bool) -> str:
    """The path a rule judges, from a request's raw path: normalize_path, and for a CRM on
    Windows (`fold`) BadRequest for a Windows alias of a name."""
    path = normalize_path(raw_path)
    if fold:
        windows_aliases(path)
    return path


def windows_aliases(path: str) -> None:
    """BadRequest when a normalised path holds a spelling that Windows reads as another name
    (a rule would judge one name while IIS serves another); for a CRM on a Windows server."""
    if _WINDOWS_ALIAS.search(path):
        raise _bad(
            "a trailing dot or space, a stream (:), a short name (~1) or an ASP.NET cookieless "
            "segment in a Windows path"
        )


@lru_cache(maxsize=16384)
def folded_glob(pattern: str, fold: bool) -> re.Pattern[str]:
    """A rule's pattern compiled, in Windows's one case when `fold` (fold_case)."""
    return compile_glob(fold_case(pattern) if fold else pattern)


def compile_glob(pattern: str) -> re.Pattern[str]:
    """`/admin/**` (the tree, itself included), `/files/*/edit` (one segment), `/exact`."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")
