"""Imports point down (DESIGN.md "Code layout"): values → config → core → adapters → web → CLI."""

from __future__ import annotations

import ast
import builtins
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"

# Lower number = lower layer. A module may import only from its own layer or below.
LAYERS = {
    # Values and leaf helpers: the standard library and third-party libraries only.
    "gateway.errors": 0,
    "gateway.clock": 0,
    "gateway.i18n": 0,
    "gateway.headers": 0,
    "gateway.model": 0,
    "gateway.fields": 0,
    "gateway.metrics": 0,
    "gateway.tasks": 0,
    "gateway.lazy": 0,
    "gateway.bounded": 0,
    "gateway.paths": 0,  # a request's path as the gateway reads it: config and rules alike
    # Reading files into frozen values.
    "gateway.config": 1,
    "gateway.crypto": 1,
    "gateway.policy": 1,
    # Deciding over those values: no I/O.
    "gateway.policy.networks": 2,
    "gateway.policy.rules": 2,
    "gateway.policy.tokens": 2,
    "gateway.policy.change": 2,
    "gateway.policy.view": 2,
    "gateway.signin.decision": 2,
    "gateway.signin.interval": 2,  # the interval a user chose, within the policy's
    # What crosses the proxy and where our prefix starts: plain functions over headers and
    # paths, kept below the web layer so they never grow a dependency on aiohttp.web.
    "gateway.web.forwarding": 2,
    "gateway.web.headplans": 2,
    "gateway.web.urls": 2,
    # The core services beside the adapters they are given.
    "gateway.policy.live": 3,
    "gateway.signin": 3,
    "gateway.factors": 3,
    "gateway.stores": 3,
    "gateway.senders": 3,
    "gateway.audit": 3,
    "gateway.alerts": 3,
    # What an administrator does and reads, shared by the command line and the console.
    "gateway.admin": 3,
    # HTTP, the demo, the command line.
    "gateway.web": 4,
    "gateway.demo": 5,
    # Looking at a CRM from outside (detect-login, doctor): starts a gateway of the web layer.
    "gateway.setup": 5,
    "gateway.cli": 6,
    "gateway.__main__": 7,
}
WEB = LAYERS["gateway.web"]


def _layer(module: str) -> int:
    best = ""
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    assert best, f"{module} is not placed in a layer: add it to LAYERS"
    return LAYERS[best]


@functools.cache
def _modules() -> dict[str, Path]:
    return {_name_of(path): path for path in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """The gateway modules a file imports, however it spells them: `import gateway.x`,
    `from gateway.x import y`, `from gateway import x` (the module x), relative imports."""
    module = _name_of(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's own package upwards
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            names.add(base)
            for alias in node.names:  # `from gateway import web`: the module gateway.web
                if f"{base}.{alias.name}" in _modules():
                    names.add(f"{base}.{alias.name}")
    return {n for n in names if n.startswith("gateway.")}


def _name_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _package(module: str) -> str:
    """The package of gateway a module belongs to: gateway.signin.decision → signin."""
    return module.split(".")[1]


# Packages of one layer that use each other, and which way: any other pair of one layer is
# a new dependency to think about (and to add here when it is meant), not one that slips in.
ACROSS = {
    ("admin", "factors"),
    ("admin", "stores"),
    ("alerts", "audit"),
    ("alerts", "senders"),
    ("alerts", "stores"),
    ("audit", "stores"),
    ("config", "crypto"),
    ("errors", "model"),
    ("factors", "signin"),
    ("factors", "stores"),
    ("fields", "errors"),
    ("fields", "headers"),
    ("paths", "errors"),
    ("policy", "audit"),
    ("policy", "config"),
    ("policy", "stores"),
    ("signin", "policy"),
    ("signin", "stores"),
}


def test_every_import_points_down() -> None:
    wrong = []
    for module, path in _modules().items():
        if module == "gateway":
            continue
        for imported in _imports(path):
            if _layer(imported) > _layer(module):
                wrong.append(
                    f"{module} (layer {_layer(module)}) imports {imported} (layer {_layer(imported)})"
                )
    assert wrong == []


def test_packages_of_one_layer_use_each_other_only_where_named() -> None:
    found = set()
    for module, path in _modules().items():
        if module == "gateway":
            continue
        for imported in _imports(path):
            if _layer(imported) == _layer(module) and _package(imported) != _package(module):
                found.add((_package(module), _package(imported)))
    assert found - ACROSS == set()


def _imports_aiohttp_web(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(
            a.name == "aiohttp.web" or a.name.startswith("aiohttp.web_") for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "aiohttp" and any(a.name == "web" for a in node.names):
                return True
            if node.module == "aiohttp.web" or node.module.startswith("aiohttp.web_"):
                return True
    return False


def test_nothing_below_web_imports_aiohttp_web() -> None:
    below = [m for m in _modules() if m != "gateway" and _layer(m) < WEB]
    assert len(below) > 40
    assert [m for m in below if _imports_aiohttp_web(_modules()[m])] == []


def test_every_package_says_what_it_holds() -> None:
    """A newcomer reads a folder's __init__.py first: each says which module holds what."""
    for init in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), init


def test_no_module_is_a_hub() -> None:
    """Small modules with one owner (STYLE.md): none past 400 lines."""
    big = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > 400}
    assert big == {}


def test_every_exception_of_ours_is_in_errors() -> None:
    """The exception tree is read in one file (gateway/errors.py): a class raised on purpose
    anywhere else would be a branch nobody sees when deciding what to catch."""
    errors = ast.parse((PACKAGE / "errors.py").read_text())
    ours = {node.name for node in ast.walk(errors) if isinstance(node, ast.ClassDef)}
    raised = {
        name
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    }
    bases = ours | raised
    elsewhere = []
    for module, path in _modules().items():
        if module == "gateway.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                named = {ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases}
                if named & bases or node.name.endswith(("Error", "Exception")):
                    elsewhere.append(f"{module}:{node.lineno}: {node.name}")
    assert elsewhere == []


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
    """gateway.model.FACTOR_NAMES (what policies may say) and the registry (what is built) agree,
    and each factor answers to its own name and has its part of the challenge page."""
    from gateway.clock import FakeClock
    from gateway.config.signin import Limits
    from gateway.crypto import Sealer, new_key_line, parse_keys
    from gateway.factors.registry import build_factors
    from gateway.model import FACTOR_NAMES
    from gateway.signin.regulation import Regulator
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
    templates = PACKAGE / "web" / "pages" / "templates" / "factors"
    for name, factor in built.items():
        assert factor.name == name
        assert (templates / f"{name}.html").is_file()


def _concrete_stores() -> tuple[set[str], set[str]]:
    """The backend modules of gateway/stores/ (all but the Protocols, the kinds and the
    registry) and the classes they define."""
    seams = {"gateway.stores.protocols", "gateway.stores.kinds"}
    modules = {m for m in _modules() if m.startswith("gateway.stores.") and m not in seams}
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


# Test files at the top of tests/ that name no module of gateway: about the tree itself, the
# installed package, and a test double of the suite.
TOP_LEVEL_TESTS = {"layout", "packaging", "django_crm"}


def test_tests_mirror_the_tree() -> None:
    """tests/<package>/test_<module>[_topic].py for gateway/<package>/<module>.py (or
    test_<package>[_topic].py for the package as a whole); flows, contracts and the image
    apart; tests/test_<module>.py for the modules at the top of gateway/."""
    tests = PACKAGE.parent / "tests"
    apart = {"flows", "contracts", "image", "crms"}
    wrong = []
    for path in tests.rglob("test_*.py"):
        folder = path.parent.relative_to(tests)
        if folder.parts and folder.parts[0] in apart:
            continue
        name = path.stem.removeprefix("test_")
        package = PACKAGE.joinpath(*folder.parts)
        if not folder.parts:
            known = {p.stem for p in PACKAGE.glob("*.py")} | TOP_LEVEL_TESTS
        elif package.is_dir():
            known = {p.stem for p in package.glob("*.py")} | {package.name}
        else:
            wrong.append(f"{path.relative_to(tests)}: no gateway/{folder} to mirror")
            continue
        if not any(name == k or name.startswith(k + "_") for k in known - {"__init__"}):
            wrong.append(f"{path.relative_to(tests)}: names no module of gateway/{folder}")
    assert wrong == []
