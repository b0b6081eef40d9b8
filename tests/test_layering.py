"""Imports between weightshare's packages point one way: down the layers of the README's
architecture map. Read from the source with `ast` (every import, also those inside
functions; not those under `if TYPE_CHECKING:`), so a lazy import that reaches up a layer
fails here as an eager one would."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "weightshare"

# Lower layers first. A package may import its own modules, anything in a lower layer, and
# (layer 0 only) the other foundation modules; nothing in its own layer or above.
LAYERS: list[set[str]] = [
    # foundation: no torch models, no I/O beyond files
    {"(root)", "errors", "registry", "io", "progress", "timing", "procs", "space", "presets"},
    {"nn", "data", "metrics", "export"},             # building blocks, datasets, measured costs
    {"models"},                                       # SuperNets
    {"checkpoint", "convert"},                        # SuperNet files; SuperNets from elsewhere
    {"train", "deployment"},                          # training; what is deployed and from where
    {"search", "quant", "fed"},                       # specialize, quantize, federate
    {"serve"},                                        # SuperServe (executors, policies, server)
    {"accel"},                                        # small devices; plugs into serve
    {"experiments"},                                  # demo, live comparisons, sweeps
    {"cli"},                                          # parses and prints
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}

# Imports that go against the layers on purpose, each for a stated reason and a limited time.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("data", "fed"): "weightshare.data.dirichlet_split: the deprecated re-export of "
                     "weightshare.fed.split, kept for one release (lazy, in __getattr__)",
    ("models", "convert"): "weightshare.models imports weightshare.convert.supernet last, so "
                           "that converted SuperNets register in the model registry",
}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    return (PKG / name).is_dir() or (PKG / f"{name}.py").is_file()


def _imports(path: Path) -> set[str]:
    """Every weightshare module `path` imports, outside `if TYPE_CHECKING:` blocks."""
    return _imports_of(path.read_text(encoding="utf-8"), _module(path), path.name == "__init__.py")


def _imports_of(source: str, module: str, is_package: bool) -> set[str]:
    pkg = module if is_package else module.rsplit(".", 1)[0]
    tree = ast.parse(source)
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "weightshare":  # `from .. import deployment` or `__version__`
                out.update(f"weightshare.{a.name}" if _is_module(a.name) else target
                           for a in node.names)
            elif target.startswith("weightshare"):
                out.add(target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("weightshare"))
    return out


def _edges() -> list[tuple[str, str, str]]:
    """(importing package, imported package, importing module) across packages."""
    edges = []
    for path in sorted(PKG.rglob("*.py")):
        src = _module(path)
        for target in _imports(path):
            a, b = _package(src), _package(target)
            if a != b:
                edges.append((a, b, src))
    return edges


def test_every_package_has_a_layer():
    found = {_package(_module(p)) for p in PKG.rglob("*.py")}
    assert found <= set(RANK), f"put these packages in LAYERS: {sorted(found - set(RANK))}"


def test_imports_point_down_the_layers():
    bad = sorted({(a, b, src) for a, b, src in _edges()
                  if (a, b) not in EXCEPTIONS
                  and not (RANK[b] < RANK[a] or RANK[a] == RANK[b] == 0)})
    assert not bad, "imports against the layers (package -> package, in module):\n" + "\n".join(
        f"  {a} -> {b}   ({src})" for a, b, src in bad)


@pytest.mark.parametrize("pair", sorted(EXCEPTIONS))
def test_exceptions_are_still_needed(pair):
    # A stale exception would let the next such import in unnoticed.
    assert pair in {(a, b) for a, b, _ in _edges()}, f"{pair} no longer happens: remove it"


def test_the_checker_sees_lazy_imports_and_skips_typing_only_ones():
    # serve/stack.py used to import accel inside build_stack: such an import must count.
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..models import SuperNet\n"
           "def f():\n    from ..accel.fastswitch import DeltaSwitchRuntime\n"
           "from .. import deployment\n")
    found = _imports_of(src, "weightshare.serve.stack", False)
    assert found == {"weightshare.accel.fastswitch", "weightshare.deployment"}
    assert "weightshare.accel.fastswitch" not in _imports(PKG / "serve" / "stack.py")


# Modules that once imported each other (serve/profile.py <-> serve/runtime.py; runtime ->
# executors -> runtime) or that the deployment and timing modules replaced: none of them
# may be on an import cycle again, not even through lazy imports.
ACYCLIC = ("weightshare.deployment", "weightshare.timing", "weightshare.procs",
           "weightshare.accel", "weightshare.search", "weightshare.experiments",
           "weightshare.serve.profile", "weightshare.serve.profiling", "weightshare.serve.runtime",
           "weightshare.serve.executors", "weightshare.serve.stack", "weightshare.serve.backends",
           "weightshare.serve.memory", "weightshare.serve.live", "weightshare.serve.loadgen")


def _module_cycles() -> list[list[str]]:
    paths = {_module(p): p for p in PKG.rglob("*.py")}
    graph = {m: {t for t in _imports(p) if t in paths and t != m} for m, p in paths.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles_through_the_restructured_modules():
    bad = [c for c in _module_cycles()
           if any(m == a or m.startswith(a + ".") for m in c for a in ACYCLIC)]
    assert not bad, f"import cycles: {bad}"
