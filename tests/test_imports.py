"""Every import in the package resolves, including those inside functions (ruff does not resolve imports, and
an import in a function no test reaches fails only when a user reaches it: the 4-bit load once imported a
module that did not exist). The layers themselves are checked by `lint-imports` (pyproject.toml)."""

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src" / "sdporec"
# Optional packages, needed only on the paths that use them; absent from this environment by design.
OPTIONAL = ("bitsandbytes", "deepspeed", "wandb", "torch.utils.tensorboard")


def imports() -> list[tuple[str, int, str, str | None]]:
    """(file, line, module, imported name or None) for every import statement under src/sdporec."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text())):
            rel = str(path.relative_to(SRC.parent))
            if isinstance(node, ast.Import):
                found += [(rel, node.lineno, a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join([*base, module] if module else base)
                found += [(rel, node.lineno, module, a.name) for a in node.names]
    return found


ALL = imports()


def test_the_scan_sees_imports_inside_functions():
    # models/loading.py imports bitsandbytes inside load_weights.
    assert ("sdporec/models/loading.py", "bitsandbytes", None) in [(f, m, n) for f, _, m, n in ALL]
    assert ("sdporec/models/loading.py", "sdporec.config", "require_cuda_for_4bit") in [(f, m, n) for f, _, m, n in ALL]
    assert len(ALL) > 300


@pytest.mark.parametrize("module", sorted({m for _, _, m, _ in ALL if not m.startswith(OPTIONAL)}))
def test_every_import_resolves(module):
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        where = ", ".join(f"{f}:{n}" for f, n, m, _ in ALL if m == module)
        pytest.fail(f"{where}: {e}")
    for file, line, m, name in ALL:
        if m == module and name is not None and name != "*" and not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")  # `from package import submodule`
            except ModuleNotFoundError:
                pytest.fail(f"{file}:{line}: from {module} import {name}: {module} has no {name}")
