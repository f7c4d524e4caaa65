"""The policy files in force, kept in the durable store: what a gateway process that starts
later compares the files on disk with.

A running gateway holds back a watched change that takes protection away until a person
confirms it (gateway.policy.change). A process that starts after such an edit (an instance
restarted by systemd, a second `crm-gateway run` on the same stores, a deploy) has no
running policy to hold on to: it would read the cut-down files and serve them while the rest
hold them back. So every process that puts files in force records them here, whole (policy
files are small), and one that starts compares the files on disk with these: a change it
would have held back while running is held back at its start too, with these files in force.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway.config.process import policy_files
from gateway.policy.load import load_policies
from gateway.policy.model import Policy

IN_FORCE_NOTE = "policy-in-force"


@dataclass(frozen=True)
class Snapshot:
    """Policy files as read once: their names and bytes, and the digest of both (the one
    `crm-gateway policy reload` confirms)."""

    files: tuple[tuple[str, bytes], ...]

    @property
    def digest(self) -> str:
        digest = hashlib.sha256()
        for name, content in self.files:
            digest.update(os.fsencode(name) + b"\0")  # as the file system names it
            digest.update(content + b"\0")
        return digest.hexdigest()

    def encode(self) -> str:
        """The note's text: JSON, each file's bytes in base64."""
        files = {name: base64.b64encode(content).decode() for name, content in self.files}
        return json.dumps({"files": files}, sort_keys=True)

    def load(self, shown_as: str) -> Policy:
        """The policy these files make, its sources named as in `shown_as` (the folder they
        came from); ConfigError when they do not load (a release that reads them otherwise)."""
        with tempfile.TemporaryDirectory(prefix="crm-gateway-policy-") as folder:
            for name, content in self.files:
                (Path(folder) / name).write_bytes(content)
            return load_policies(folder, shown_as=shown_as)


def read_snapshot(folder: str | Path) -> Snapshot:
    """The policy files of `folder` as they are on disk now."""
    return Snapshot(tuple((path.name, path.read_bytes()) for path in policy_files(folder)))


def decode(text: str) -> Snapshot | None:
    """The note's files, or None when there is no note or it does not read (never a crash:
    the files on disk are taken then, as before the note existed)."""
    if not text:
        return None
    try:
        files = json.loads(text)["files"]
        return Snapshot(
            tuple(
                (str(name), base64.b64decode(content, validate=True))
                for name, content in sorted(files.items())
                if "/" not in name and "\x00" not in name and name not in ("", ".", "..")
            )
        )
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        return None
