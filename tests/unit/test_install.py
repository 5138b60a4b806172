"""`make run` / `make test` install quietly: `pip install --quiet -e .` shows only what the build
backend warns about, and the editable build of this project warns about nothing."""

import shutil
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# pip shows a build's `warnings` (setuptools' "Editable installation" block is one), not its log.
BUILD = """
import sys, warnings
from setuptools import build_meta
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    wheel = build_meta.build_editable(sys.argv[1])
for warning in caught:
    print("WARNING", warning.category.__name__, str(warning.message).strip().splitlines()[0])
print("WHEEL", wheel)
"""


def test_the_editable_install_is_a_plain_pth_without_a_warning(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", source)
    shutil.copy(PROJECT_ROOT / "app.py", source)
    for package in ("webapp", "tasks"):
        shutil.copytree(
            PROJECT_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )

    build = subprocess.run(
        [sys.executable, "-c", BUILD, str(tmp_path / "wheel")],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert build.returncode == 0, build.stderr
    said = build.stdout.splitlines()
    assert [line for line in said if line.startswith("WARNING")] == []
    wheel = tmp_path / "wheel" / said[-1].removeprefix("WHEEL ")
    listing = subprocess.run(
        [sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True, text=True
    ).stdout
    assert "__editable__.batchgen-0.1.0.pth" in listing and "finder" not in listing
