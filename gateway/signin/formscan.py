"""Whether a body too large to read whole names the CRM's login, found as it streams: a
signed-in user's upload to the login's path (`/index.php`, where a PHP CRM's login is told
apart by `action=Login`) is not read before it goes, so a login padded past login.max_body
would reach the CRM's password check uncounted. The caller gives the CRM only bytes that end
where `named_if_cut` says no login is in them (gateway.web.bodies.HeldBack).

Read as generously as form_names_login reads a body it has whole: each `name=value` of
login.path's query that the request's query does not hold must be in the form. Urlencoded:
each pair, decoded, under any name a server reads as the name (gateway.fields); a name
longer than LONGEST_NAME judged by its start. Multipart, part by part as PHP's rfc1867.c
finds them (a part begins at a line starting with `--` and the boundary, the boundary read
from the type as PHP reads it and as RFC 2046 does): the name anywhere in the part's head
(spelled as PHP reads it), the value as the first line after the head. Where PHP may end a
head is read generously: an empty line, one starting with NUL (empty as a C string), one
holding a NUL or as long as PHP's 5 KiB line buffer (split there, its rest an empty line)
may each end it, and the line after each is taken for the value. Other media types carry no
field a PHP CRM reads (JSON bodies are not looked at here). Plain functions over bytes.
"""

from __future__ import annotations

import copy
import re
from urllib.parse import unquote_plus

from gateway.config.signin import Login
from gateway.fields import may_be_read_as, media_type
from gateway.signin.identity import json_names_login, query_matches

# Longer than this before its `=` (after the spaces and brackets servers drop from its
# start), a name is read as no login's field: no form has names this long. Taken for one.
LONGEST_NAME = 4096
_DROPPED = re.compile(rb"\A(?:[ +\[\]]|%20|%5[bBdD])+")
# Multipart names are looked for as written, lowercased, with what PHP reads as `_` (`.`,
# a space, an unclosed `[`) read as `_` on both sides: `login.module` is `login_module`.
_AS_PHP_READS = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ. [", b"abcdefghijklmnopqrstuvwxyz___")
# A form with more fields than this (PHP reads 1,000 by default: max_input_vars) is taken for
# the login: a scan of each costs about a microsecond, and no browser sends one.
MOST_FIELDS = 10_000
_SEPARATOR = re.compile(rb"[&;]")
_PAIR = re.compile(rb"[^&;]+")
_BOUNDARY = re.compile(r'(?i);\s*boundary\s*=\s*(?:"([^"]*)"|([^\s;,]+))')
_LINE_START = 512  # of a multipart line, kept: enough for a boundary and a wanted value
_PHP_LINE = 1024  # a line this long may be cut by PHP's 5 KiB buffer (its alignment varies)
_OUT, _DELIMITER, _HEAD, _VALUE, _CONTENT = "out", "delimiter", "head", "value", "content"
# Spellings a framework decodes that PHP does not (ASP.NET Core reads the form before the
# query): a charset other than UTF-8 for the body or a part, a part's name as an RFC 2047
# word (`name="=?utf-8?B?YWN0aW9u?="`), a value after a byte order mark. A body at the
# login's path with the first two is taken for the login (and a login is read only in UTF-8,
# so it is refused); a value is read past its byte order mark, in UTF-16 after UTF-16's.
_CHARSET = re.compile(rb'(?i)charset\s*=\s*"?\s*([^\s";,]*)')
_ENCODED_NAME = re.compile(rb'(?i)(?<![a-z*])name\s*=\s*"?\s*=\?')


def form_names_login(login: Login, raw_target: str, body: bytes, content_type: str) -> bool:
    """Each `name=value` of login.path's query is in the request's query or its body: a form
    (urlencoded or multipart) read whole by the same FormScan that reads a streamed one, so
    the two never disagree, or a JSON body's keys (identity.json_names_login). A password
    the CRM checks is counted, and its cookie held, wherever the pair stood."""
    scan = FormScan(login, raw_target, content_type)
    if not scan.scanned:
        return json_names_login(login, raw_target, body, content_type)
    scan.feed(body)
    scan.finish()
    return scan.found


class FormScan:
    """Fed a body's chunks in order (`feed`), then `finish`; `found` once it names the login."""

    def __init__(self, login: Login, raw_target: str, content_type: str) -> None:
        raw_query = raw_target.partition("?")[2]
        wanted = [p for p in login.path.partition("?")[2].split("&") if p]
        # Only what the request's own query does not say already must be in the form.
        self._wanted = [
            (unquote_plus(name), unquote_plus(value).casefold())
            for name, _, value in (p.partition("=") for p in wanted)
            if not query_matches(f"{name}={value}", raw_query)
        ]
        self._kind = media_type(content_type)
        self._met: set[int] = set()
        self._buffer = b""  # urlencoded: the pair so far; multipart: the line so far
        self._overflow = False  # urlencoded: the pair's value is longer than any wanted
        self._name_cut = False  # urlencoded: the pair's name is past LONGEST_NAME, kept cut
        self._fields = 0  # pairs (or multipart lines) read one by one
        # Multipart: the lines that begin a part, where this part is (before the first part,
        # in its head, at the line after a possible end of its head, in its content), the
        # wanted names its head holds, and of the line so far its start, length and names.
        self._delimiters = boundaries(content_type)
        self._where = _OUT
        self._carry = b""  # skipping: the last bytes, for a boundary cut between chunks
        self._keep = max((len(d) for d in self._delimiters), default=1) - 1
        self._line_start = max(_LINE_START, self._keep + 8)
        self._maybe_value = False  # the line before may have ended the head
        self._head: set[int] = set()
        self._length = 0
        self._line_names: set[int] = set()
        self._tail = b""  # the line's last bytes (as PHP reads names), for a name cut between
        self._spelled = [name.lower().encode().translate(_AS_PHP_READS) for name, _ in self._wanted]
        self._longest = max((len(v.encode()) for _, v in self._wanted), default=0) * 3 + 8
        # The query names the login by itself, or the body is in another charset than ours.
        self.found = not self._wanted or _foreign(content_type.encode("utf-8", "replace"))
        self._head_foreign = False  # multipart: this part's head names another charset
        # Urlencoded: a pair whose value begins with a wanted one (`action=Loginx`) names the
        # login in a body cut inside it, and a CRM may run a cut body (mod_php keeps its whole
        # 16 KiB blocks): given to the CRM past that point, the body is refused too.
        self._cut_met: set[int] = set()
        self.cut_found = False

    @property
    def scanned(self) -> bool:
        """Whether this body's media type is one a PHP CRM reads fields from."""
        return self._kind == "application/x-www-form-urlencoded" or self._kind.startswith(
            "multipart/"
        )

    def feed(self, chunk: bytes) -> None:
        if self.found or not chunk or not self._wanted or not self.scanned:
            return
        if self._kind.startswith("multipart/"):
            self._multipart(chunk)
        else:
            self._urlencoded(chunk)

    def finish(self) -> None:
        """The body has ended: its last pair or line is judged too."""
        if self.found or not self._wanted or not self.scanned:
            return
        if self._kind.startswith("multipart/"):
            if self._where not in (_OUT, _CONTENT):
                self._line_ends()  # a CRM may register a part the body's end cut short
        else:
            self._pair(self._buffer)
        self._buffer = b""

    @property
    def refused(self) -> bool:
        """The body names the login, whole (`found`) or cut short inside a pair (`cut_found`)."""
        return self.found or self.cut_found

    def named_if_cut(self) -> bool:
        """Whether the body, cut where it has been fed to, names the login: a CRM may run a
        body cut short (PHP reads the pairs that came), its unfinished pair or line the last
        (`…&action=Login` then `x`: given without the `x`, it names the login)."""
        if self.refused:
            return True
        probe = copy.copy(self)
        probe._met, probe._cut_met = set(self._met), set(self._cut_met)
        probe._head, probe._line_names = set(self._head), set(self._line_names)
        probe.finish()
        return probe.refused

    # -- application/x-www-form-urlencoded ------------------------------------------------

    def _urlencoded(self, chunk: bytes) -> None:
        first = _SEPARATOR.search(chunk)
        if first is None:
            self._grow(chunk)
            return
        self._grow(chunk[: first.start()])
        self._pair(self._buffer)  # the pair the chunk before began, ended here
        self._buffer, self._overflow, self._name_cut = b"", False, False
        last = max(chunk.rfind(b"&"), chunk.rfind(b";"))
        # The whole pairs between, read in C but for the ones with something in them (PHP
        # skips the empty ones too); the last piece begins the next pair.
        for pair in _PAIR.finditer(chunk, first.end(), last):
            if self.found:
                return
            self._pair(pair.group())
        self._grow(chunk[last + 1 :])

    def _grow(self, piece: bytes) -> None:
        """Add to the pair so far, keeping of its value only what could still be wanted."""
        if self._overflow:
            return
        if self._name_cut:  # the name's start is kept; what follows it until `=` is not
            _, equals, rest = piece.partition(b"=")
            if not equals:
                return
            self._name_cut, piece = False, b"=" + rest
        self._buffer += piece
        name, equals, value = self._buffer.partition(b"=")
        if not equals and len(name) > LONGEST_NAME:
            # Judged by its start (after what servers drop from it): past LONGEST_NAME a
            # name is read as a wanted one only through its start (`action%00…`).
            name = _DROPPED.sub(b"", name)
            if len(name) > LONGEST_NAME:
                name, self._name_cut = name[:LONGEST_NAME], True
            self._buffer = name
        elif equals and len(value) > self._longest:
            self._pair(self._buffer)  # its start, all a body cut inside it keeps of it
            self._overflow = True  # longer than every wanted value: not one
            self._buffer = b""

    def _pair(self, raw: bytes) -> None:
        """One whole pair; a name without `=` has the empty value (PHP, parse_qsl). Past
        MOST_FIELDS of them the form is taken for the login: no browser sends such a form,
        and reading one would cost the gateway more than its CPU per request."""
        if self._overflow or not raw:
            return
        self._fields += 1
        if self._fields > MOST_FIELDS:
            self.found = True
            return
        name_raw, _, value_raw = raw.partition(b"=")
        value = unquote_plus(value_raw.decode("utf-8", "replace")).casefold()
        if not any(value.startswith(wanted_value) for _, wanted_value in self._wanted):
            return  # most pairs: the name need not be read
        name = unquote_plus(name_raw.decode("utf-8", "replace"))
        for number, (wanted, wanted_value) in enumerate(self._wanted):
            if value.startswith(wanted_value) and (
                name.casefold() == wanted.casefold() or may_be_read_as(name, wanted)
            ):
                self._cut_met.add(number)
                if value == wanted_value:
                    self._met.add(number)
        self.found = self.found or len(self._met) == len(self._wanted)
        self.cut_found = len(self._met | self._cut_met) == len(self._wanted)

    # -- multipart/form-data ----------------------------------------------------------------

    def _multipart(self, chunk: bytes) -> None:
        if not self._delimiters:
            return  # no boundary: PHP reads no part (nor does any server)
        at = 0
        while not self.found:
            if self._where in (_OUT, _CONTENT):
                at = self._skip(chunk, at)
                if at < 0:
                    return
            end = chunk.find(b"\n", at)
            if end < 0:
                self._line_grows(chunk[at:])
                return
            self._line_grows(chunk[at:end])
            self._line_ends()
            at = end + 1

    def _skip(self, chunk: bytes, at: int) -> int:
        """Before the first part, and in a part's content (a file), only a part's beginning
        matters: the boundary, looked for in C anywhere, not only at a line's start (PHP's
        5 KiB line buffer cuts a long line, and what follows the cut is a line of its own;
        after the closing boundary PHP goes on looking for one). Where in `chunk` the line
        that begins a part goes on (-1: none in it; its last bytes are kept for the next)."""
        seen = self._carry + chunk[at:]
        hits = [hit for hit in (seen.find(d) for d in self._delimiters) if hit >= 0]
        if not hits:
            self._carry = seen[max(0, len(seen) - self._keep) :]
            return -1
        begins = at + min(hits) - len(self._carry)
        self._carry = b""
        self._where = _DELIMITER
        return max(begins, at)

    def _line_grows(self, piece: bytes) -> None:
        """Add to the line so far: its start (for the boundary, the value and how it ends),
        its length, and the wanted names in it (looked for across pieces)."""
        if len(self._buffer) < self._line_start:
            self._buffer += piece[: self._line_start - len(self._buffer)]
        self._length += len(piece)
        if self._where == _HEAD or self._maybe_value:
            seen = self._tail + piece.translate(_AS_PHP_READS).replace(b"\\", b"")
            for number, spelled in enumerate(self._spelled):
                if spelled in seen:
                    self._line_names.add(number)
            self._tail = seen[-LONGEST_NAME:]

    def _line_ends(self) -> None:
        """One whole line (or the last, cut short), read as rfc1867.c reads it. Past
        MOST_FIELDS * 2 lines read so (heads, values, the lines that begin parts), the form
        is taken for the login, as past MOST_FIELDS pairs."""
        self._fields += 1
        if self._fields > MOST_FIELDS * 2:
            self.found = True
        start, length, names = self._buffer, self._length, self._line_names
        self._buffer, self._length, self._line_names, self._tail = b"", 0, set(), b""
        text = start[:-1] if start.endswith(b"\r") and length == len(start) else start
        if self._where == _DELIMITER or (
            self._where == _VALUE and any(start.startswith(d) for d in self._delimiters)
        ):
            self._where, self._maybe_value, self._head = _HEAD, False, set()
            self._head_foreign = False
            return
        if self._where == _HEAD and any(start.startswith(d) for d in self._delimiters):
            # PHP reads a head line by line to its end, a boundary among them too (a header
            # line to it): the names seen so far are kept, and a new head may begin.
            self._maybe_value = False
            return
        if self._where == _VALUE or self._maybe_value:
            self._value(text if length <= len(start) else None)
        if self._where == _VALUE:
            self._where = _CONTENT
        if self._where != _HEAD:
            self._maybe_value = False
            return
        self._head |= names
        if _ENCODED_NAME.search(text):
            self.found = True  # a name no PHP reads, and a framework decodes to any
        self._head_foreign = self._head_foreign or _foreign(text)
        if self._head_foreign and self._head:
            self.found = True  # a wanted name's value, in a charset we do not read
        if not text or text.startswith(b"\x00"):  # the head's end for certain
            self._where, self._maybe_value = _VALUE, False
        else:  # a line PHP may cut into pieces, one of them empty: perhaps its end
            self._maybe_value = length >= _PHP_LINE or b"\x00" in start

    def _value(self, text: bytes | None) -> None:
        """The line after a head (perhaps) ended: a wanted value of a name in that head."""
        if text is None or len(text) > self._longest:
            return
        if text.startswith((b"\xff\xfe", b"\xfe\xff")):
            value = text.decode("utf-16", "replace").strip("\r\x00").casefold()
        else:
            value = text.rstrip(b"\r").decode("utf-8", "replace").lstrip("\ufeff").casefold()
        for number, (_, wanted_value) in enumerate(self._wanted):
            if number in self._head and value == wanted_value:
                self._met.add(number)
        self.found = self.found or len(self._met) == len(self._wanted)


def _foreign(text: bytes) -> bool:
    """Whether a Content-Type (the body's, or a line of a part's head) names a charset other
    than UTF-8 (its ASCII subset too: a form is sent in UTF-8 or not labelled)."""
    found = _CHARSET.search(text)
    return found is not None and found.group(1).lower() not in (b"utf-8", b"utf8", b"")


def boundaries(content_type: str) -> list[bytes]:
    """The lines that begin a part (`--` and the boundary), by each reading of the type's
    boundary: PHP's (rfc1867.c: the first `boundary`, case-sensitive, then in any case,
    after its `=`; quoted to the next `"`, else cut at `,` or `;`) and RFC 2046's."""
    found = set()
    at = content_type.find("boundary")
    at = at if at >= 0 else content_type.lower().find("boundary")
    equals = content_type.find("=", at) if at >= 0 else -1
    if equals >= 0:
        rest = content_type[equals + 1 :]
        if rest.startswith('"'):
            found.add(rest[1:].partition('"')[0])
        else:
            found.add(re.split("[,;]", rest, maxsplit=1)[0])
    rfc = _BOUNDARY.search(content_type)
    if rfc is not None:
        found.add(rfc.group(1) or rfc.group(2))
    return [b"--" + b.encode("utf-8", "replace") for b in sorted(found) if b]
