"""README's first-screen commands and what CI runs stay in sync."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands(text):
    return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    test_command = _commands(readme)[1].strip()
    assert test_command.startswith("pip install -e") and "pytest" in test_command
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert ci_lines[-1] == test_command


def test_main_job_is_on_the_first_screen():
    readme = (ROOT / "README.md").read_text()
    first_screen = "\n".join(readme.splitlines()[:25])
    assert "python -m experiments" in _commands(first_screen)[0]
    assert "pytest" in _commands(first_screen)[1]


def test_readme_python_example_runs():
    readme = (ROOT / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)\n```", readme, flags=re.S)[:1]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["dw"].shape == (8, 3)
    assert namespace["samples"].shape == (16, 4, 8)
