"""The engine never imports Textual: it talks to any UI through events only."""

import subprocess
import sys

from .conftest import REPO


def test_engine_imports_no_textual():
    modules = sorted(p.stem for p in (REPO / "engine").glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module('engine.' + name)\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith(('textual.', 'tui')))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
    assert len(modules) > 10


def test_engine_source_has_no_textual_import():
    for path in (REPO / "engine").glob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            assert not stripped.startswith(("import textual", "from textual", "from tui", "import tui")), path
