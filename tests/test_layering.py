"""The import layering of docs/architecture.md, checked on the source with ``ast``.

Every ``faithcb`` module sits in one layer; a module may import from its own layer or below, never
from above, and the import graph (function-level imports included) has no cycle. A new module
must be placed in ``LAYERS`` (and in docs/architecture.md) before this test passes.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "faithcb"

# Lowest first. Keep in step with the table in docs/architecture.md.
LAYERS: list[tuple[str, set[str]]] = [
    ("foundations", {"errors", "normalize", "answers", "steps", "metrics", "stats"}),
    ("problems and records", {"problem", "history", "stopping", "budget", "tasks", "tasks.arithmetic", "problem_records", "data", "prompting"}),
    ("probes", {"probes", "probes.base", "probes.registry", "probes.early_answering", "probes.filler",
                "probes.paraphrase", "probes.info_gain", "probes.mistakes"}),
    ("settings", {"settings", "config", "preflight", "training", "results", "logkeys", "wandb_sink", "tensorboard_layout",
                  "runinfo", "model_card", "validation_stats"}),
    ("model access", {"scoring", "packed", "lm", "generation", "models", "rng", "distributed", "processes", "kv_room"}),
    ("round", {"engine", "rounds", "chains", "variant_scoring", "rollouts"}),
    ("training loop", {"callback", "checkpointing", "recipes", "testing", "reward"}),
    ("tools", {"report", "show", "cli", "demo", "validation", "__init__"}),
]
LAYER_OF = {module: i for i, (_, modules) in enumerate(LAYERS) for module in modules}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """faithcb modules imported anywhere in ``path`` (module level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from faithcb.probes import registry" imports faithcb.probes.registry when it is a module.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "faithcb" or not name.startswith("faithcb."):
                continue
            module = name.removeprefix("faithcb.")
            if module in LAYER_OF or (PACKAGE / f"{module.replace('.', '/')}.py").exists():
                found.add(module)
    return found


def import_graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) - {_module_name(p)} for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    unplaced = sorted(set(import_graph()) - set(LAYER_OF))
    assert not unplaced, f"place these modules in a layer (tests/test_layering.py, docs/architecture.md): {unplaced}"


def test_no_module_imports_a_layer_above_it():
    upward = [
        f"{module} ({LAYERS[LAYER_OF[module]][0]}) imports {dep} ({LAYERS[LAYER_OF[dep]][0]})"
        for module, deps in import_graph().items()
        for dep in sorted(deps)
        if module in LAYER_OF and dep in LAYER_OF and LAYER_OF[dep] > LAYER_OF[module]
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph = import_graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if dep.startswith(module + "."):
                continue  # a package importing its own submodules is not a cycle
            if state.get(dep) == 1 and not module.startswith(dep + "."):
                return path + [dep]
            if dep not in state:
                cycle = visit(dep, path + [dep])
                if cycle:
                    return cycle
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [module])
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("statement", ["from faithcb import FaithConfig", "import faithcb.config, faithcb.history"])
def test_configs_import_without_torch(statement):
    code = f"import sys; {statement}; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"


def documented_layers() -> list[tuple[str, set[str]]]:
    """The layer table of docs/architecture.md as ``[(layer name, {module, ...}), ...]``, lowest first.

    A row that starts a layer reads ``| 3 settings | `config` | ... |``; the rows after it leave the
    first cell empty. ``probes.<name>`` stands for every probe module not named on a row of its own.
    """
    layers: list[tuple[str, set[str]]] = []
    header = "| layer | module |"
    lines = ARCHITECTURE.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        layer, module = (cell.strip() for cell in line.strip("|").split("|")[:2])
        if layer:
            number, name = layer.split(" ", 1)
            assert number == str(len(layers)), f"docs/architecture.md: layer {layer!r} is numbered out of order"
            layers.append((name, set()))
        layers[-1][1].add(module.strip("`"))
    return layers


def test_the_layer_table_in_the_docs_lists_exactly_the_modules_of_layers():
    documented = documented_layers()
    assert [name for name, _ in documented] == [name for name, _ in LAYERS]
    for (name, in_docs), (_, in_test) in zip(documented, LAYERS):
        # A package's __init__ (probes, tasks) is implied by its modules; the docs do not list it.
        expected = {m for m in in_test if not (PACKAGE / m.replace(".", "/")).is_dir()}
        if "probes.<name>" in in_docs:
            in_docs = (in_docs - {"probes.<name>"}) | {
                m for m in expected if m.startswith("probes.") and m not in in_docs
            }
        assert in_docs == expected, (
            f"layer {name!r}: only in docs/architecture.md {sorted(in_docs - expected)}, "
            f"only in tests/test_layering.py LAYERS {sorted(expected - in_docs)}"
        )
