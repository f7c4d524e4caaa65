"""Whether a body too large to read whole names the CRM's login, found as it streams: a
signed-in user's upload to the login's path (`/index.php`, where a PHP CRM's login is told
apart by `action=Login`) is not read before it goes, so a login padded past login.max_body
would reach the CRM's password check uncounted. The caller gives the CRM only bytes that end
where `named_if_cut` says no login is in them (gateway.web.bodies.HeldBack).

Read as generously as form_names_login reads a body it has whole: each `name=value` of
login.path's query that the request's query does not hold must be in the form. Urlencoded:
each pair, decoded, under any name a server reads as the name (gateway.fields). Multipart:
the name anywhere in the body and the value as a line of its own after an empty one (a
part's content after its head), whatever the boundary. Other media types carry no field a
PHP CRM reads (JSON bodies are not looked at here). Plain functions over bytes; no I/O.
"""

from __future__ import annotations

import copy
import re
from urllib.parse import unquote_plus

from gateway.config.signin import Login
from gateway.fields import may_be_read_as, media_type
from gateway.signin.identity import query_matches

# Longer than this before its `=` (after the spaces and brackets servers drop from its
# start), a name is read as no login's field: no form has names this long. Taken for one.
LONGEST_NAME = 4096
_DROPPED = re.compile(rb"\A(?:[ +\[\]]|%20|%5[bBdD])+")
# Multipart names are looked for as written, lowercased, with what PHP reads as `_` (`.`,
# a space, an unclosed `[`) read as `_` on both sides: `login.module` is `login_module`.
_AS_PHP_READS = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ. [", b"abcdefghijklmnopqrstuvwxyz___")


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
        self._overflow = False  # the line (or the value) is longer than any wanted
        self._after_empty = False  # multipart: the line before was empty
        self._values: set[int] = set()  # multipart: wanted values seen as a line
        self._names: set[int] = set()  # multipart: wanted names seen anywhere
        self._tail = b""  # multipart: the last bytes, for a name cut between chunks
        self._spelled = [name.lower().encode().translate(_AS_PHP_READS) for name, _ in self._wanted]
        self._longest = max((len(v.encode()) for _, v in self._wanted), default=0) * 3 + 8
        self.found = False
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
            self._line(self._buffer)
            self._settle_multipart()
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
        probe._values = set(self._values)
        probe.finish()
        return probe.refused

    # -- application/x-www-form-urlencoded ------------------------------------------------

    def _urlencoded(self, chunk: bytes) -> None:
        pieces = re.split(rb"[&;]", chunk)
        for at, piece in enumerate(pieces):
            if at:  # a separator ended the pair before this piece
                self._pair(self._buffer)
                self._buffer, self._overflow = b"", False
                if self.found:
                    return
            self._grow(piece)

    def _grow(self, piece: bytes) -> None:
        """Add to the pair so far, keeping of its value only what could still be wanted."""
        if self._overflow:
            return
        self._buffer += piece
        name, equals, value = self._buffer.partition(b"=")
        if not equals and len(name) > LONGEST_NAME:
            name = _DROPPED.sub(b"", name)
            if len(name) > LONGEST_NAME:
                self.found = True  # a name no form has: refused rather than guessed
                return
            self._buffer = name
        elif equals and len(value) > self._longest:
            self._pair(self._buffer)  # its start, all a body cut inside it keeps of it
            self._overflow = True  # longer than every wanted value: not one
            self._buffer = b""

    def _pair(self, raw: bytes) -> None:
        """One whole pair; a name without `=` has the empty value (PHP, parse_qsl)."""
        if self._overflow or not raw:
            return
        name_raw, _, value_raw = raw.partition(b"=")
        name = unquote_plus(name_raw.decode("utf-8", "replace"))
        value = unquote_plus(value_raw.decode("utf-8", "replace")).casefold()
        for number, (wanted, wanted_value) in enumerate(self._wanted):
            if value.startswith(wanted_value) and (
                name.casefold() == wanted.casefold() or may_be_read_as(name, wanted)
            ):
                self._cut_met.add(number)
                if value == wanted_value:
                    self._met.add(number)
        self.found = len(self._met) == len(self._wanted)
        self.cut_found = len(self._met | self._cut_met) == len(self._wanted)

    # -- multipart/form-data ----------------------------------------------------------------

    def _multipart(self, chunk: bytes) -> None:
        seen = (self._tail + chunk).translate(_AS_PHP_READS)
        for number, spelled in enumerate(self._spelled):
            if spelled in seen:
                self._names.add(number)
        self._tail = seen[-LONGEST_NAME:]
        lines = chunk.split(b"\n")
        for at, piece in enumerate(lines):
            if at:
                self._line(self._buffer)
                self._buffer, self._overflow = b"", False
            if not self._overflow:
                self._buffer += piece
                if len(self._buffer) > self._longest:
                    self._overflow = True
                    self._buffer = b""
        self._settle_multipart()

    def _line(self, line: bytes) -> None:
        """One whole line: a wanted value when it stands alone after an empty line."""
        if self._overflow:
            self._after_empty = False
            return
        text = line.rstrip(b"\r")
        if self._after_empty:
            value = text.decode("utf-8", "replace").casefold()
            for number, (_, wanted_value) in enumerate(self._wanted):
                if value == wanted_value:
                    self._values.add(number)
        self._after_empty = not text

    def _settle_multipart(self) -> None:
        self.found = all(n in self._names and n in self._values for n in range(len(self._wanted)))
