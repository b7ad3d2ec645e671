"""The pipeline's import direction: model -> record -> runs -> sinks -> diagnosis -> report.

Every ``import``/``from ... import`` of a gradguard module anywhere in a source file counts (also
inside functions: a lazy import is still a dependency). A stage imports only itself and stages to
its left; ``errors``, ``metrics`` and ``format`` are importable from anywhere; the packages on top
(preflight, remedies, lab, integrations, commands, cli, watching) compose stages. No import cycle
between modules, lazy or not, except a package's ``__init__`` re-exporting its own modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "gradguard"

# rank of each top-level part: an import may only go to a part of lower or equal rank
RANK = {
    "errors": 0,
    "metrics": 0,
    "format": 0,
    "model": 1,
    "theory": 1,
    "record": 2,
    "runs": 3,
    "sinks": 4,
    "diagnosis": 5,
    "report": 6,
    **{top: 7 for top in ("preflight", "remedies")},
    **{
        top: 8
        for top in ("lab", "integrations", "keras", "commands", "cli", "watching", "__main__")
    },
}
# the only modules that may import every stage (they compose them)
COMPOSERS = {"watching", "lab", "integrations", "keras", "commands", "cli", "__main__"}


def _module_name(path: Path, src: Path = SRC) -> str:
    rel = path.relative_to(src.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, src: Path = SRC) -> set[str]:
    """gradguard modules ``path`` imports (absolute names), anywhere in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path, src).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("gradguard"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("gradguard"):
                continue
            out.add(mod)
            for a in node.names:  # `from gradguard.x import y` where y is a module
                cand = f"{mod}.{a.name}"
                if (src.parent / cand.replace(".", "/")).with_suffix(".py").exists() or (
                    src.parent / cand.replace(".", "/") / "__init__.py"
                ).exists():
                    out.add(cand)
    return out


def _graph(src: Path = SRC) -> dict[str, set[str]]:
    modules = {_module_name(p, src): p for p in src.rglob("*.py")}
    return {m: {i for i in _imports(p, src) if i in modules and i != m} for m, p in modules.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_has_a_rank() -> None:
    parts = {_part(m) for m in _graph()} - {"__init__"}
    assert parts <= set(RANK), f"give these parts a rank in RANK: {sorted(parts - set(RANK))}"


def _backward(graph: dict[str, set[str]]) -> list[str]:
    backward = []
    for mod, deps in graph.items():
        src = _part(mod)
        if src == "__init__":
            continue  # the lazy public API names modules as strings only
        for dep in deps:
            dst = _part(dep)
            if dst == "__init__" or src == dst or src in COMPOSERS:
                continue
            if RANK[dst] > RANK[src]:
                backward.append(f"{mod} -> {dep}")
    return sorted(backward)


def test_imports_go_leftward_only() -> None:
    backward = _backward(_graph())
    assert not backward, "backward imports:\n" + "\n".join(backward)


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            # a package's __init__ re-exporting its own submodules is not a cycle of concepts
            if d == m.rsplit(".", 1)[0] or (m.startswith(d + ".") and graph.get(d)):
                continue
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_record_never_imports_diagnosis() -> None:
    bad = [
        f"{m} -> {d}"
        for m, deps in _graph().items()
        if _part(m) == "record"
        for d in deps
        if _part(d) == "diagnosis"
    ]
    assert not bad


@pytest.mark.parametrize("part", ["record", "runs"])
def test_core_modules_stay_small(part: str) -> None:
    big = {
        str(p.relative_to(SRC)): n
        for p in (SRC / part).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not big, f"split these modules (over 400 lines): {big}"


def test_the_checker_sees_a_lazy_backward_import(tmp_path: Path) -> None:
    # the checker itself can fail: a record module importing diagnosis inside a function, and a
    # relative import of runs from record, are both reported
    root = tmp_path / "gradguard"
    for pkg in ("record", "diagnosis", "runs"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "record" / "x.py").write_text(
        "def f():\n    from gradguard.diagnosis import diagnose\n\nfrom ..runs import y\n"
    )
    (root / "runs" / "y.py").write_text("")
    got = _backward(_graph(root))
    assert got == [
        "gradguard.record.x -> gradguard.diagnosis",
        "gradguard.record.x -> gradguard.runs",
        "gradguard.record.x -> gradguard.runs.y",
    ]


def test_metric_names_are_written_only_in_metrics_py() -> None:
    """Buffer rows, store, report and rules read metric names from gradguard.metrics; a string
    literal of a metric name anywhere else (docstrings aside) is a second declaration."""
    from gradguard import metrics

    names = {str(m) for m in metrics.LAYER_METRICS} | {
        str(m)
        for m in (
            metrics.GRAD_NORM_TOTAL,
            metrics.CLIP_NORM_BEFORE,
            metrics.CLIP_NORM_AFTER,
            metrics.HF_GRAD_NORM,
            metrics.HF_LOSS,
        )
    }
    # the same word with another meaning there: a finding kind, a config field, an event's data
    # key, the Hugging Face Trainer's log key
    other_meaning = {
        ("diagnosis/rules/nonfinite.py", "nonfinite"),
        ("diagnosis/online.py", "nonfinite"),
        ("diagnosis/knowledge.py", "nonfinite"),
        ("preflight/verdict.py", "nonfinite"),
        ("remedies/guard.py", "nonfinite"),
        ("integrations/transformers.py", "grad_norm"),
        ("record/config.py", "update_ratio"),
        ("remedies/_guard_event.py", "grad_norm"),
    }
    found = []
    for path in SRC.rglob("*.py"):
        rel = str(path.relative_to(SRC))
        if rel == "metrics.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and node.value in names
                and id(node) not in docstrings
                and (rel, node.value) not in other_meaning
            ):
                found.append(f"{rel}:{node.lineno} {node.value!r}")
    assert not found, "use the gradguard.metrics constants:\n" + "\n".join(found)
