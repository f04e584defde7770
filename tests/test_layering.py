"""The engine's layers: which part may import which, no import circles, and imports with no effect.

Each engine module belongs to one layer; a module may import its own layer and the layers below,
never one above (so, for instance, the config never reaches into training, and nothing in the
engine reaches the app). Imports inside functions count the same as those at the top, so a
function-level import cannot hide a circle. ``docs/architecture.md`` draws the same table.
"""

import ast
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

# lowest first; a module may import from its own layer and every layer listed before it
LAYERS = [
    ("base", ("engine.errors", "engine.roles", "engine.files", "engine.events")),
    ("config", ("engine.config", "engine.hub")),
    ("model", ("engine.model",)),
    ("data", ("engine.data",)),
    ("loss", ("engine.loss",)),
    ("levers", ("engine.levers",)),
    ("runs", ("engine.runs",)),
    ("training", ("engine.training",)),
    ("deliver", ("engine.export", "engine.playground")),
    ("launch", ("engine.launch", "engine.cli", "engine.printer")),
    ("app", ("tui",)),
]


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_imports(path: Path) -> set[str]:
    """Every engine or tui module ``path`` imports, at any depth of its code."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from engine import events`
    modules = set(MODULES)
    return {m for m in found if m in modules and m != name}


SOURCES = sorted([*(REPO / "engine").rglob("*.py"), *(REPO / "tui").rglob("*.py")])
MODULES = {module_name(p): p for p in SOURCES}


def test_every_import_goes_down_or_sideways():
    wrong = []
    for name, path in MODULES.items():
        if name in ("engine", "tui"):
            continue
        for target in project_imports(path):
            if target in ("engine", "tui"):
                continue
            if layer_of(target) > layer_of(name):
                wrong.append(f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circles():
    graph = {name: project_imports(path) - {"engine", "tui"} for name, path in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            raise AssertionError("import circle: " + " -> ".join(cycle[cycle.index(cycle[-1]):]))


def test_layers_cover_the_engine():
    engine_modules = [m for m in MODULES if m.startswith("engine.")]
    assert len(engine_modules) > 40
    for name in engine_modules:
        layer_of(name)


def run_fresh(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=180)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_engine_imports_no_textual():
    modules = sorted(m for m in MODULES if m.startswith("engine"))
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith(('textual.', 'tui')))\n"
        "print(','.join(bad))\n"
    )
    assert run_fresh(code) == ""


def test_events_and_config_load_no_mlx_and_importing_changes_nothing():
    """The app's config screen validates YAML without MLX, and no engine import touches the process:
    the CPU's floating-point flags and MLX's environment are set by prepare_process only."""
    code = (
        "import os, sys\n"
        "import engine.events, engine.config, engine.errors, engine.roles, engine.files\n"
        "print('mlx' in sys.modules)\n"
        "import engine.training.trainer, engine.cli\n"
        "from engine.levers.denormals import denormals_flushed_here\n"
        "print(denormals_flushed_here(), 'MLX_BFS_MAX_WIDTH' in os.environ)\n"
    )
    env_clean = "import os; os.environ.pop('MLX_BFS_MAX_WIDTH', None)\n"
    assert run_fresh(env_clean + code).splitlines() == ["False", "False False"]


def test_the_command_line_loads_mlx_only_to_train():
    """`tuner control`, `tuner validate` and the re-execution with OpenBLAS preloaded happen before
    MLX (which loads slowly, and must load after the preload) is imported."""
    assert run_fresh("import sys, engine.cli, tui.launch\nprint('mlx' in sys.modules)") == "False"


def test_engine_source_has_no_textual_import():
    for path in (REPO / "engine").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            assert not stripped.startswith(("import textual", "from textual", "from tui", "import tui")), path
