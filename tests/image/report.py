"""What the image test prints: a line per check as it is decided, the figures it measured, a
loud banner when it cannot run here, and the closing `image-test: N passed, N failed`."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field


@dataclass
class Report:
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)

    def note(self, text: str) -> None:
        print(f"image-test: {text}", flush=True)

    def check(self, name: str, ok: bool, detail: str) -> bool:
        print(f"  {'ok  ' if ok else 'FAIL'}  {name}: {detail}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
        return ok

    def figure(self, name: str, value: str) -> None:
        self.figures[name] = value

    def skipped(self, reason: str) -> None:
        banner = "#" * 78
        text = (
            f"{banner}\n# image-test SKIPPED: {reason}\n"
            f"# The container image was NOT built or run on this machine.\n{banner}"
        )
        print(text, file=sys.stderr, flush=True)
        print(f"{text}\nimage-test: 0 passed, 0 failed, 1 skipped", flush=True)

    def close(self) -> int:
        print("figures:")
        for name, value in self.figures.items():
            print(f"  {name}: {value}")
        for name in self.failed:
            print(f"failed: {name}", file=sys.stderr)
        print(f"image-test: {self.passed} passed, {len(self.failed)} failed", flush=True)
        return 1 if self.failed else 0
