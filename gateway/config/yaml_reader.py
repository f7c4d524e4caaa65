"""Reads YAML keeping line numbers, and turns values into typed ones while collecting problems.

Every accessor records a Problem (file, line, dotted key path, message) instead of raising,
so a whole file is checked at once; callers fall back to defaults and raise ConfigError at the
end. Shared by gateway.yaml and the policy files. Knows nothing about what the keys mean.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.config.networks import IPNetwork, parse_network
from gateway.errors import Problem

T = TypeVar("T")

_STR_TAG = "tag:yaml.org,2002:str"
# PyYAML's implicit types (YAML 1.1): bool and null are these words, in lower, Title or UPPER
# case; int, float, timestamp, merge and value start with one of _TYPED_START. Any other plain
# scalar, and any containing "/" (no implicit type does: CIDRs, paths), is a string.
_WORDS = frozenset({"yes", "no", "true", "false", "on", "off", "null"})
_TYPED_START = frozenset("0123456789+-.~<=")
_BASE: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Text values are names, paths, URLs and short templates: longer is a mistake (a file pasted
# into the wrong key, a runaway generator), and it would be copied into pages and messages.
MAX_TEXT = 4096
MAX_KEY = 256  # a key is a name (a user may be an e-mail address): longer is cut in reports
_SHOWN = 60  # characters of a value quoted back in a message


class _FastLoader(_BASE):  # type: ignore[misc]
    """libyaml's composer (line marks kept, ~10x faster than pure Python) with a resolver
    that settles the common untyped scalars (names, CIDRs) without regexes. A policy with
    50,000 networks loads in about a second instead of ten."""

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if (
            kind is ScalarNode
            and implicit[0]
            and value
            and ("/" in value or (value[0] not in _TYPED_START and value.lower() not in _WORDS))
        ):
            return _STR_TAG
        return str(super().resolve(kind, value, implicit))


# Digits bounded: a number thousands of digits long is a mistake, and Python refuses to turn
# more than 4,300 digits into an int (a ValueError, not a problem report).
_MAX_DIGITS = 15
_DURATION = re.compile(r"^\s*(\d{1,15}(?:\.\d{1,9})?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_SIZE = re.compile(r"^\s*(\d{1,15})\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}


def describe(node: Node) -> str:
    """How a value is quoted back in a message: `but it's 'crm.local'`; a long one cut short,
    so one absurd value cannot make the report itself absurd."""
    if isinstance(node, ScalarNode):
        if node.tag.endswith(":null"):
            return "empty"
        text = str(node.value)
        if len(text) > _SHOWN:
            return f"{text[:_SHOWN]!r}… ({len(text):,} characters)"
        return repr(text) if node.tag.endswith(":str") else text
    if isinstance(node, MappingNode):
        return "a mapping"
    return "a list"


class Source:
    """One file being read: its name, the folder its relative paths start from, and the
    problems found in it so far."""

    def __init__(self, file: str, folder: Path | None = None) -> None:
        """`folder`: where relative paths written in the file start; by default the folder
        of `file` when it names a YAML file (else the current one: text with no file)."""
        self.file = file
        if folder is None:
            folder = Path(file).parent if file.endswith((".yaml", ".yml")) else Path()
        self.folder = Path(os.path.abspath(folder))  # `../site` kept readable: no `..` left
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def resolve(self, path: str) -> Path:
        """A path written in this file: relative to the file's folder, never to the current
        directory, so an admin command run from elsewhere finds what the gateway uses."""
        return self.folder / path

    def parse(self, text: str) -> Value | None:
        try:
            node = yaml.compose(text, Loader=_FastLoader)
        except yaml.MarkedYAMLError:
            # The pure-Python parser names the offending character; errors are rare.
            try:
                yaml.compose(text, Loader=yaml.SafeLoader)
            except yaml.MarkedYAMLError as exc:
                self._yaml_problem(exc)
                return None
            self.problems.append(Problem(self.file, 0, "", "not valid YAML"))
            return None
        except yaml.YAMLError as exc:
            self.problems.append(Problem(self.file, 0, "", f"not valid YAML: {exc}"))
            return None
        if node is None or (isinstance(node, ScalarNode) and node.tag.endswith(":null")):
            self.problems.append(Problem(self.file, 1, "", "the file is empty"))
            return None
        return Value(self, node, "")

    def _yaml_problem(self, exc: yaml.MarkedYAMLError) -> None:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        self.problems.append(Problem(self.file, line, "", f"not valid YAML: {exc.problem}"))

    def problem(self, node: Node | None, path: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 0
        self.problems.append(Problem(self.file, line, path, message))

    def warn(self, node: Node | None, path: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 0
        self.warnings.append(Problem(self.file, line, path, message))


class Value:
    """A YAML node at a dotted path; converts itself, reporting problems to its Source."""

    def __init__(self, source: Source, node: Node, path: str) -> None:
        self.source = source
        self.node = node
        self.path = path

    @property
    def line(self) -> int:
        return int(self.node.start_mark.line) + 1

    def fail(self, message: str) -> None:
        self.source.problem(self.node, self.path, message)

    def warn(self, message: str) -> None:
        self.source.warn(self.node, self.path, message)

    def _child_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    # -- structure -------------------------------------------------------------------------

    def mapping(self, allowed: AbstractSet[str] | None = None) -> dict[str, Value] | None:
        """The keys of a mapping; unknown keys (when `allowed` is given) and duplicates fail."""
        if not isinstance(self.node, MappingNode):
            self.fail(f"must be a mapping but it's {describe(self.node)}")
            return None
        out: dict[str, Value] = {}
        for key_node, value_node in self.node.value:
            if not isinstance(key_node, ScalarNode):
                self.source.problem(key_node, self.path, "keys must be plain names")
                continue
            key = str(key_node.value)
            if len(key) > MAX_KEY:
                where = self._child_path(key[:_SHOWN] + "…")
                message = f"is {len(key):,} characters long: a key is a name (at most {MAX_KEY})"
                self.source.problem(key_node, where, message)
                continue
            path = self._child_path(key)
            if key in out:
                self.source.problem(key_node, path, "appears twice")
                continue
            if allowed is not None and key not in allowed:
                known = ", ".join(sorted(allowed))
                self.source.problem(key_node, path, f"unknown key (known here: {known})")
                continue
            out[key] = Value(self.source, value_node, path)
        return out

    def items(self) -> Iterator[tuple[str, Value]]:
        """Entries of a mapping whose keys are names chosen by the user (users, networks…)."""
        found = self.mapping()
        if found is not None:
            yield from found.items()

    def sequence(self) -> list[Value] | None:
        if not isinstance(self.node, SequenceNode):
            self.fail(f"must be a list but it's {describe(self.node)}")
            return None
        return [Value(self.source, n, f"{self.path}[{i}]") for i, n in enumerate(self.node.value)]

    # -- scalars ---------------------------------------------------------------------------

    def _scalar(self, kind: str) -> ScalarNode | None:
        if not isinstance(self.node, ScalarNode):
            self.fail(f"must be {kind} but it's {describe(self.node)}")
            return None
        return self.node

    def text(self, *, allow_empty: bool = False, max_length: int = MAX_TEXT) -> str | None:
        node = self._scalar("a string")
        if node is None:
            return None
        if node.tag.endswith(":null") and node.value in ("", "~", "null"):
            self.fail("must be a string but it's empty")
            return None
        value = str(node.value)
        if not value and not allow_empty:
            self.fail("must not be empty")
            return None
        if len(value) > max_length:
            self.fail(
                f"must be at most {max_length:,} characters but it's {len(value):,} "
                f"characters long (starting {value[:_SHOWN]!r})"
            )
            return None
        return value

    def file_path(self) -> str | None:
        """A path to a file or folder: relative to the folder of the file that names it
        (Source.resolve). Whether it exists is the caller's rule."""
        text = self.text()
        return None if text is None else str(self.source.resolve(text))

    def boolean(self) -> bool | None:
        node = self._scalar("true or false")
        if node is None:
            return None
        if node.tag.endswith(":bool"):
            return bool(yaml.safe_load(node.value))
        self.fail(f"must be true or false but it's {describe(node)}")
        return None

    def integer(self, *, minimum: int | None = None, maximum: int | None = None) -> int | None:
        node = self._scalar("a whole number")
        if node is None:
            return None
        if not node.tag.endswith(":int"):
            self.fail(f"must be a whole number but it's {describe(node)}")
            return None
        if len(node.value) > _MAX_DIGITS:
            self.fail(
                f"must be a whole number of at most {_MAX_DIGITS} digits but it's {describe(node)}"
            )
            return None
        value = int(yaml.safe_load(node.value))
        return self._bounded(value, minimum, maximum)

    def _bounded(self, value: T, minimum: float | None, maximum: float | None) -> T | None:
        if minimum is not None and value < minimum:  # type: ignore[operator]
            self.fail(f"must be at least {minimum} but it's {describe(self.node)}")
            return None
        if maximum is not None and value > maximum:  # type: ignore[operator]
            self.fail(f"must be at most {maximum} but it's {describe(self.node)}")
            return None
        return value

    def choice(self, options: tuple[str, ...]) -> str | None:
        value = self.text()
        if value is None:
            return None
        if value not in options:
            self.fail(f"must be one of {', '.join(options)} but it's {describe(self.node)}")
            return None
        return value

    def kind(self, keys: dict[str, Value], kinds: tuple[str, ...]) -> str | None:
        """The `type:` of a mapping that names its kind (a store, a provider): required,
        one of `kinds`."""
        if "type" not in keys:
            self.fail("type: is required")
            return None
        return keys["type"].choice(kinds)

    def duration(self, *, minimum: float = 0.0) -> float | None:
        """Seconds, from `30`, `500ms`, `5s`, `10m`, `12h`, `1d`, `2w`."""
        node = self._scalar("a duration")
        if node is None:
            return None
        match = _DURATION.match(str(node.value))
        if not match:
            self.fail(f"must be a duration such as 30s, 5m, 12h or 7d but it's {describe(node)}")
            return None
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        return self._bounded(seconds, minimum, None)

    def size(self, *, minimum: int = 0) -> int | None:
        """Bytes, from `1024`, `64KiB`, `4MiB`, `1GB`."""
        node = self._scalar("a size")
        if node is None:
            return None
        match = _SIZE.match(str(node.value))
        if not match:
            self.fail(f"must be a size such as 64KiB or 4MiB but it's {describe(node)}")
            return None
        return self._bounded(int(match.group(1)) * _SIZE_UNITS[match.group(2)], minimum, None)

    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        value = self.text()
        if value is None:
            return None
        found = parse_network(value)
        if isinstance(found, str):
            self.fail(found)
            return None
        return found

    def secret(self, *, inline_ok: bool = False) -> str | None:
        """A secret given as `{env: NAME}`, `{file: PATH}` or, discouraged, inline.

        `inline_ok`: a value that is often not secret at all (a Redis URL without a password,
        an HTTP header) may be written inline without a warning."""
        if isinstance(self.node, ScalarNode):
            value = self.text()
            if value is not None and not inline_ok:
                self.warn("is written inline; prefer {env: NAME} or {file: PATH}")
            return value
        keys = self.mapping({"env", "file"})
        if keys is None:
            return None
        if len(keys) != 1:
            self.fail("must name exactly one of env or file")
            return None
        if "env" in keys:
            name = keys["env"].text()
            if name is None:
                return None
            if name not in os.environ:
                keys["env"].fail(f"environment variable {name} is not set")
                return None
            if not os.environ[name]:
                keys["env"].fail(f"environment variable {name} is empty")
                return None
            return os.environ[name]
        path = keys["file"].file_path()
        if path is None:
            return None
        try:
            content = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            keys["file"].fail(f"cannot read {path}: {exc.strerror}")
            return None
        if not content:
            keys["file"].fail(f"{path} is empty")
            return None
        return content


def read_network_list(path: Path, source: Source, where: str) -> list[IPNetwork]:
    """A plain list file: one network per line, `#` comments, blank lines ignored. Problems
    name the list file and line. Big lists load here far faster than as YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        source.problems.append(Problem(source.file, 0, where, f"cannot read {path}: {exc}"))
        return []
    found: list[IPNetwork] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        network = parse_network(entry)
        if isinstance(network, str):
            source.problems.append(Problem(str(path), number, where, network))
        else:
            found.append(network)
    return found


def read_file(path: Path, source: Source) -> Value | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        source.problems.append(Problem(source.file, 0, "", "file not found"))
        return None
    except (OSError, UnicodeDecodeError) as exc:
        source.problems.append(Problem(source.file, 0, "", f"cannot read: {exc}"))
        return None
    return source.parse(text)
