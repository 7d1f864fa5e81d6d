"""The layout of ``src/initwise`` (issue 12): imports point down, one seam for torch internals.

- No import cycle among initwise's modules, counting every import (module level and inside
  functions; ``if TYPE_CHECKING:`` blocks too).
- Library modules import initwise modules at the top of the file only (a function-local import
  used to dodge a cycle means a concept is on the wrong floor). The CLI and ``compare`` import
  lazily on purpose (start-up time of the command line), and optional third-party packages
  (matplotlib, transformers, scipy) may be imported where they are used.
- PyTorch's private API is touched only in ``initwise/_torch.py``.
- Every module is importable under its own name (no facade function shadows it).
"""

from __future__ import annotations

import ast
import importlib
import re
import types
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "initwise"
LAZY_OK = ("cli.py", "compare/", "__main__.py")


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _files() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute initwise module names an ``ImportFrom`` refers to."""
    if node.level:
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("initwise"):
        return []
    return [target] + [f"{target}.{a.name}" for a in node.names]


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    names = {_module_name(p): p for p in _files()}
    edges: dict[str, set[str]] = {m: set() for m in names}
    local: list[tuple[str, int, str]] = []
    for mod, path in names.items():
        tree = ast.parse(path.read_text())
        is_pkg = path.name == "__init__.py"
        parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                targets = _resolve(mod, is_pkg, node)
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("initwise")]
            targets = [t for t in targets if t in names and t != mod]
            if not targets:
                continue
            edges[mod].update(targets)
            p = parents.get(node)
            while p is not None and not isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)):
                p = parents.get(p)
            if p is not None:
                local.append((str(path.relative_to(SRC)), node.lineno, ", ".join(targets)))
    return edges, local


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _package_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges without the ones from a package to its own submodules (a facade re-exporting)."""
    return {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in edges.items()}


def test_no_import_cycles() -> None:
    cycles = _cycles(_package_edges(_graph()[0]))
    assert cycles == [], f"import cycles in src/initwise: {cycles}"


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_no_function_local_imports_of_initwise_in_the_library() -> None:
    local = [x for x in _graph()[1] if not x[0].startswith(LAZY_OK)]
    assert local == [], f"function-local initwise imports: {local}"


_PRIVATE_TORCH = re.compile(
    r"\.(_parameters|_buffers|_apply|_local_tensor|_compiled_call_impl|_flat_weights_names|"
    r"_qkv_same_embed_dim|_forward_hooks|_forward_pre_hooks|_global_forward_\w+|_version|"
    r"_power_method|_reshape_weight_to_matrix|_NormBase|_BatchNorm|_InstanceNorm|_ConvNd|"
    r"_calculate_fan_in_and_fan_out)\b|torch\._C\b|torch\._dynamo\b|tensor\._utils\b"
)


def test_torch_private_api_only_in_the_seam() -> None:
    hits = []
    for path in _files():
        if path.name == "_torch.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if ">>>" in line or "``" in line or "<torch._C." in line:
                continue
            if _PRIVATE_TORCH.search(code):
                hits.append(f"{path.relative_to(SRC)}:{i}: {line.strip()}")
    assert hits == [], "torch private API outside initwise/_torch.py:\n" + "\n".join(hits)


@pytest.mark.parametrize("name", sorted(_module_name(p) for p in _files()))
def test_module_importable_under_its_own_name(name: str) -> None:
    mod = importlib.import_module(name)
    assert isinstance(mod, types.ModuleType)
    parent, _, leaf = name.rpartition(".")
    if parent:
        assert isinstance(getattr(importlib.import_module(parent), leaf), types.ModuleType), (
            f"{parent}.{leaf} is shadowed by a non-module attribute"
        )


def test_one_error_base_class() -> None:
    import initwise

    for exc in (initwise.InitError, initwise.LSUVError, initwise.AuditError):
        assert issubclass(exc, initwise.InitwiseError)
        assert issubclass(exc, RuntimeError)


def test_old_module_paths_still_import() -> None:
    """One-release aliases: ``from initwise.plan import Plan`` and friends keep working."""
    from initwise.audit import AuditReport
    from initwise.fans import tensor_fans
    from initwise.lsuv import LSUVReport
    from initwise.plan import Plan
    from initwise.schemes import kaiming_normal_

    import initwise

    assert Plan is initwise.Plan and AuditReport is initwise.AuditReport
    assert LSUVReport is initwise.LSUVReport and tensor_fans is initwise.tensor_fans
    assert kaiming_normal_ is initwise.kaiming_normal_
    assert callable(initwise.plan) and callable(initwise.fans)  # the facade functions stay
