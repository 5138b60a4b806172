"""The house keeps its shape: imports follow the layers of docs/architecture.md, and no module
grows past what one concern needs."""

import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 350


def test_imports_follow_the_layers_of_the_architecture():
    """import-linter's contract in pyproject.toml: views above the queue above the services
    above billing, storage and providers above the models; a back-edge breaks it."""
    linter = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run(
        [str(linter), "--no-cache"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_no_module_of_the_service_is_over_350_lines():
    modules = [*PROJECT_ROOT.glob("webapp/**/*.py"), *PROJECT_ROOT.glob("tasks/**/*.py")]
    too_long = {
        str(path.relative_to(PROJECT_ROOT)): lines
        for path in modules
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert modules and too_long == {}
