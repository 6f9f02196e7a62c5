"""The stack points one way: orchestrator -> analysis -> models, never back up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file: at its top, inside functions, under TYPE_CHECKING."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("folder, above", [("analysis", ("repsweep.orchestrator",)),
                                           ("models", ("repsweep.orchestrator", "repsweep.analysis"))])
def test_no_module_imports_a_layer_above_its_own(folder, above):
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no modules under {folder}/"
    upward = [f"{p.relative_to(ROOT)}:{line} imports {module}" for p in files for line, module in _imports(p)
              if module.startswith(above)]
    assert upward == [], "\n".join(upward)


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from repsweep.orchestrator.spec import AXES\n    return AXES\n")
    assert _imports(source) == [(2, "repsweep.orchestrator.spec")]
