"""Imports point down (DESIGN.md "Code layout"): values → config → core → adapters → web → CLI."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"

# Lower number = lower layer. A module may import only from its own layer or below.
LAYERS = {
    "gateway.errors": 0,
    "gateway.clock": 0,
    "gateway.i18n": 0,
    "gateway.headers": 0,
    "gateway.model": 0,
    "gateway.fields": 0,
    "gateway.metrics": 0,
    "gateway.policy": 1,
    "gateway.netindex": 2,
    "gateway.pathrules": 1,
    "gateway.access": 2,
    "gateway.policychange": 2,
    "gateway.decision": 2,
    "gateway.tokens": 2,
    "gateway.loader": 1,
    "gateway.config": 1,
    "gateway.crypto": 1,
    "gateway.signin_config": 1,
    "gateway.passwords": 1,
    "gateway.messaging_config": 1,
    "gateway.alerts_config": 1,
    "gateway.shutdown_config": 1,
    "gateway.senders": 3,
    "gateway.factors": 3,
    "gateway.factors.names": 0,  # the policy loader reads the names; the factors sit above
    "gateway.session": 3,
    "gateway.regulation": 3,
    "gateway.identity": 3,
    "gateway.forwarding": 2,
    "gateway.paths": 2,
    "gateway.stores": 3,
    "gateway.audit": 3,
    "gateway.alerts": 3,
    "gateway.demo.crm": 3,
    "gateway.web": 4,
    "gateway.demo": 5,
    "gateway.cli": 6,
    "gateway.admin": 6,
    "gateway.usage": 6,
    "gateway.usercli": 6,
    "gateway.keycli": 6,
    "gateway.auditcli": 6,
    "gateway.backup": 6,
    "gateway.backup_file": 3,
    "gateway.__main__": 7,
}


def _layer(module: str) -> int:
    best = ""
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    assert best, f"{module} is not placed in a layer: add it to LAYERS"
    return LAYERS[best]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(p for p in parts if p != "__init__")
        found[name] = path
    return found


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return {n for n in names if n == "gateway" or n.startswith("gateway.")}


def test_every_import_points_down() -> None:
    wrong = []
    for module, path in _modules().items():
        if module == "gateway":
            continue
        for imported in _imports(path):
            if imported != "gateway" and _layer(imported) > _layer(module):
                wrong.append(
                    f"{module} (layer {_layer(module)}) imports {imported} (layer {_layer(imported)})"
                )
    assert wrong == []


def test_core_never_imports_aiohttp_web() -> None:
    core = [m for m in _modules() if m != "gateway" and _layer(m) <= 2]
    assert core
    for module in core:
        source = _modules()[module].read_text()
        assert "aiohttp.web" not in source and "from aiohttp import web" not in source, module


def test_stores_never_import_the_core_or_web() -> None:
    stores = {m: p for m, p in _modules().items() if m.startswith("gateway.stores")}
    assert stores  # not passing by finding nothing to check
    for module, path in stores.items():
        for imported in _imports(path):
            assert _layer(imported) <= 1 or imported.startswith("gateway.stores"), (
                module,
                imported,
            )


def test_only_clock_reads_the_time() -> None:
    for module, path in _modules().items():
        if module in ("gateway.clock", "gateway.web.server") or module.startswith("gateway.demo"):
            continue  # the supervisor's restart backoff is process plumbing, not logic
        source = path.read_text()
        assert "time.time()" not in source and "datetime.now(" not in source, module


def test_the_factor_registry_builds_every_factor_the_policy_may_name() -> None:
    """gateway.factors.names (what policies may say) and the registry (what is built) agree,
    and each factor answers to its own name and has its part of the challenge page."""
    from gateway.clock import FakeClock
    from gateway.crypto import Sealer, new_key_line, parse_keys
    from gateway.factors.names import FACTOR_NAMES
    from gateway.factors.registry import build_factors
    from gateway.regulation import Regulator
    from gateway.signin_config import Limits
    from gateway.stores.memory import MemorySharedStore

    clock = FakeClock()
    built = build_factors(
        durable=None,  # type: ignore[arg-type]  # nothing is read while building
        regulator=Regulator(MemorySharedStore(clock), clock, Limits()),
        sealer=Sealer(parse_keys(new_key_line("k1"))),
        clock=clock,
        codes=None,
        channels=(),
        contact=lambda user, channel: "",
    )
    assert tuple(built) == FACTOR_NAMES
    templates = PACKAGE / "web" / "templates" / "factors"
    for name, factor in built.items():
        assert factor.name == name
        assert (templates / f"{name}.html").is_file()


def _concrete_stores() -> tuple[set[str], set[str]]:
    """The backend modules of gateway/stores/ (all but the Protocols and the registry) and
    the classes they define."""
    modules = {
        m for m in _modules() if m.startswith("gateway.stores.") and m != "gateway.stores.protocols"
    }
    classes = {
        node.name
        for m in modules
        for node in ast.walk(ast.parse(_modules()[m].read_text()))
        if isinstance(node, ast.ClassDef)
    }
    return modules, classes


def test_nothing_outside_stores_names_a_concrete_store() -> None:
    """DESIGN.md "State": outside gateway/stores/ a store is opened through the registry
    (gateway.stores.open_durable, open_stores, durable_snapshots) and held as its Protocol:
    no import of a backend module, no backend class named, not even as a type."""
    modules, classes = _concrete_stores()
    assert {"gateway.stores.sqlite", "gateway.stores.memory"} <= modules
    assert {"SqliteDurableStore", "MemorySharedStore", "RedisSharedStore"} <= classes
    backend_names = {m.rsplit(".", 1)[1] for m in modules}
    wrong = []
    for module, path in _modules().items():
        if module == "gateway.stores" or module.startswith("gateway.stores."):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            named: set[str] = set()
            if isinstance(node, ast.Import):
                named = {a.name for a in node.names} & modules
            elif isinstance(node, ast.ImportFrom) and node.module:
                named = {node.module} & modules
                if node.module == "gateway.stores":  # from gateway.stores import sqlite
                    named |= {a.name for a in node.names} & backend_names
                named |= {a.name for a in node.names} & classes
            elif isinstance(node, ast.Name):
                named = {node.id} & classes
            elif isinstance(node, ast.Attribute):  # gateway.stores.sqlite.SqliteDurableStore
                named = ({node.attr} & classes) | ({ast.unparse(node)} & modules)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                named = {node.value} & (modules | classes)  # importlib, string annotations
            wrong += [f"{module}:{node.lineno}: {name}" for name in sorted(named)]  # type: ignore[attr-defined]
    assert wrong == []
