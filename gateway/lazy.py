"""A module imported at the first read of one of its names, not where it is named: for a
library only some configurations use, whose import every worker would otherwise pay for in
memory at start (gateway.factors.webauthn's fido2)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """`name` as a module that runs its code at the first attribute read (the standard
    library's LazyLoader); the module itself when something imported it already. Its parent
    package is imported now (to find it), which should be light."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent:  # as an import does: `import a.b` then `a.b` finds it
        setattr(sys.modules[parent], child, module)
    return module
