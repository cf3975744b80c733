"""dropjax is a typed package (PEP 561): its public API stays annotated.

Runs ``pyright --verifytypes dropjax --ignoreexternal`` (a few seconds) when pyright is
installed, as in the ``test`` extra, and skips otherwise or when pyright cannot start (it
fetches Node.js on first use). mypy runs from ``.ci/run`` (``mypy``, configured in
pyproject.toml); it needs no test here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MIN_COMPLETENESS = 0.95


def test_public_api_type_completeness() -> None:
    pyright = shutil.which("pyright")
    if pyright is None:
        pytest.skip("pyright is not installed (pip install -e '.[test]')")
    # An editable install is found through an import hook pyright cannot follow: put the
    # checkout itself on the path.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [pyright, "--verifytypes", "dropjax", "--ignoreexternal", "--outputjson"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        report = json.loads(proc.stdout)["typeCompleteness"]
    except (json.JSONDecodeError, KeyError):
        pytest.skip(f"pyright gave no report (exit {proc.returncode}): {proc.stderr[-500:]}")
    assert report["pyTypedPath"], "dropjax/py.typed is missing"
    checked = Path(report["packageRootDirectory"]).resolve()
    assert checked == ROOT / "dropjax", f"pyright checked {checked}, not this checkout"
    unknown = [
        f"{s['name']}: {d['message']}"
        for s in report["symbols"]
        if s["isExported"]
        for d in s["diagnostics"]
        if d["severity"] == "error"
    ]
    score = report["completenessScore"]
    assert score >= MIN_COMPLETENESS, (
        f"type completeness {score:.1%} < {MIN_COMPLETENESS:.1%}; annotate:\n"
        + "\n".join(unknown[:40])
    )
