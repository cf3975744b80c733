"""Packaging and command-line edges (issue 25, item 7): the sdist, README as PyPI's page,
dropjax.linen/nnx without Flax, a fast ``list``, one-line usage errors, unreadable results
files, and the documentation's sources."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS_URL = "https://dropjax.readthedocs.io/"
SITE = DOCS_URL + "en/latest/"
PROG_ERROR = "python -m experiments: error: "


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


# --------------------------------------------------------------------------------------------
# 1. The sdist: the library, without a test suite that could not run outside the repository
# --------------------------------------------------------------------------------------------


def test_the_sdist_holds_the_library_and_no_tests(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "MANIFEST.in", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("dropjax", "tests"):  # tests/ is there, as in a checkout
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", "dist", "."],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    (sdist,) = (src / "dist").glob("dropjax-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"dropjax/__init__.py", "dropjax/linen.py", "README.md", "LICENSE"} <= names
    assert not {n for n in names if n.split("/")[0] in ("tests", "experiments", "benchmarks")}


# --------------------------------------------------------------------------------------------
# 2. README is the long description: every link must work off the repository
# --------------------------------------------------------------------------------------------


def _links(markdown: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", markdown)


def _repository_file(url: str) -> Path | None:
    """The file the documentation site serves at ``url`` (docs/conf.py builds it from)."""
    path = url.removeprefix(SITE)
    if path == "report.html":
        return ROOT / "experiments" / "REPORT.md"
    if m := re.fullmatch(r"benchmarks/([\w.-]+)\.html", path):  # generated from the table
        return ROOT / "benchmarks" / "results" / f"{m.group(1)}.md"
    if m := re.fullmatch(r"([\w/-]+)\.html", path):  # a page of docs/
        return ROOT / "docs" / f"{m.group(1)}.md"
    return ROOT / path  # copied at its repository path (docs/conf.py's SERVED_FILES)


def test_readme_links_are_absolute_and_lead_to_files_of_the_site():
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert urls["Documentation"] == DOCS_URL
    links = _links((ROOT / "README.md").read_text())
    assert len(links) >= 15
    relative = [link for link in links if not re.match(r"https?://", link)]
    assert not relative, f"README links that break on PyPI: {relative}"
    served = [link for link in links if link.startswith(SITE)]
    assert len(served) >= 15
    for link in served:
        path = _repository_file(link)
        assert path is not None and path.is_file(), f"{link}: no {path} to build it from"


def test_the_regenerated_summary_table_links_absolutely(tmp_path, monkeypatch):
    from experiments import report

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.START}\nold\n{report.END}\nrest\n")
    summary = "| 1 | [figure](results/lenet_mnist/paper.png) |"
    monkeypatch.setattr(report, "README_PATH", readme)
    monkeypatch.setattr(report, "REPORT_PATH", tmp_path / "REPORT.md")
    monkeypatch.setattr(report, "build_report", lambda out: f"# r\n\n## Summary\n\n{summary}\n")
    # path given explicitly: write_report's default is the repository's REPORT.md
    report.write_report(tmp_path / "results", path=tmp_path / "REPORT.md")
    (link,) = _links(readme.read_text())
    assert link == SITE + "experiments/results/lenet_mnist/paper.png"
    assert (ROOT / link.removeprefix(SITE)).parent.is_dir()  # served at its repository path


# --------------------------------------------------------------------------------------------
# 3. dropjax.linen and dropjax.nnx without Flax
# --------------------------------------------------------------------------------------------


def test_the_flax_adapters_without_flax_say_how_to_install_it():
    out = _python(
        """
import sys
sys.modules["flax"] = None  # as if Flax were not installed
import dropjax
for module in ("linen", "nnx"):
    try:
        __import__(f"dropjax.{module}")
    except ImportError as err:
        print(module, type(err).__name__, type(err.__cause__).__name__, err)
"""
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["linen", "nnx"]
    for line in lines:
        module, kind, cause, message = line.split(" ", 3)
        assert (kind, cause) == ("ImportError", "ModuleNotFoundError")  # the original, chained
        assert f"dropjax.{module} needs Flax" in message
        assert 'pip install "dropjax[flax]"' in message


# --------------------------------------------------------------------------------------------
# 4. `python -m experiments list` imports no experiment (no Flax, SciPy or JAX)
# --------------------------------------------------------------------------------------------


def test_list_prints_the_catalog_without_importing_an_experiment():
    out = _python(
        """
import sys
from experiments.__main__ import main
assert main(["list"]) == 0
heavy = sorted(m for m in ("jax", "flax", "scipy", "optax", "matplotlib") if m in sys.modules)
experiments = sorted(m for m in sys.modules if m.startswith("experiments."))
print("IMPORTED", heavy, experiments)
"""
    )
    assert out.returncode == 0, out.stderr
    *rows, imported = out.stdout.strip().splitlines()
    assert imported.startswith("IMPORTED [] ")
    loaded = set(eval(imported.split(" ", 2)[2]))  # noqa: S307 (our own repr)
    assert not {m for m in loaded if m.startswith("experiments.claims")}  # no claim
    assert loaded <= {  # the catalog and the light part of the harness
        "experiments.__main__",
        "experiments.catalog",
        "experiments.harness",
        "experiments.harness.budget",
        "experiments.harness.claim",
        "experiments.harness.host_devices",
        "experiments.harness.multihost",
        "experiments.harness.results",
    }
    from experiments.catalog import DESCRIPTIONS, NAMES

    listed = {row.split(None, 1)[0]: row.split(None, 1)[1] for row in rows}
    assert [row.split(None, 1)[0] for row in rows] == sorted(NAMES)
    assert listed == DESCRIPTIONS


def test_the_catalogs_descriptions_are_the_registered_ones():
    from experiments.catalog import DESCRIPTIONS, NAMES, claims

    table = claims()  # imports every claim (and checks the same)
    assert set(DESCRIPTIONS) == set(NAMES)
    assert {name: table[name].description for name in NAMES} == DESCRIPTIONS


# --------------------------------------------------------------------------------------------
# 5. A bad value on the command line: one line on stderr, exit status 2, nothing run
# --------------------------------------------------------------------------------------------


def _exit_and_stderr(capsys, argv: list[str]) -> tuple[int, str]:
    from experiments.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    return stop.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--dataset", "nope"], "argument --dataset: unknown dataset 'nope'; available: mnist"),
        (["--replicas", "0"], "argument --replicas: must be at least 1; got 0"),
        (["--replicas", "-3"], "argument --replicas: must be at least 1; got -3"),
        (["--replicas", "two"], "argument --replicas: not an integer: 'two'"),
        (["--seed", "x"], "argument --seed: not an integer: 'x'"),
        (["--seed", "-1"], "argument --seed: must be from 0 to 2**31 - 1"),
        (["--seed", str(2**32)], "argument --seed: must be from 0 to 2**31 - 1"),
        (["--time-budget", "0"], "argument --time-budget: must be a positive number"),
        (["--time-budget", "-5"], "argument --time-budget: must be a positive number"),
        (["--time-budget", "inf"], "argument --time-budget: must be a positive number"),
        (["--time-budget", "soon"], "argument --time-budget: not a number: 'soon'"),
        (["--cells", "("], "argument --cells: not a regular expression (missing )"),
        (["--forget", "[a"], "argument --forget: not a regular expression (unterminated"),
        (["--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
        (["--num-processes", "2"], "--coordinator, --num-processes and --process-id need"),
        (["--distributed", "--num-processes", "0"], "argument --num-processes: must be at"),
        (["--distributed", "--process-id", "-1"], "argument --process-id: must be 0 or more"),
        (
            ["--distributed", "--num-processes", "2", "--process-id", "2"],
            "--process-id must be below --num-processes (2); got 2",
        ),
        (["--out", "README.md"], "--out README.md is a file; give a folder"),
        (["--data-source", "tfds", "--data-dir", "no/such/dir"], "--data-dir no/such/dir is not"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_status_2(capsys, monkeypatch, flags, says):
    monkeypatch.chdir(ROOT)  # README.md is a file there
    code, err = _exit_and_stderr(capsys, ["linear_l2", *flags])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(PROG_ERROR + says), err


def test_an_unknown_experiment_is_one_line_and_exit_status_2(capsys):
    code, err = _exit_and_stderr(capsys, ["lenet_mnsit"])
    assert code == 2 and err == (
        PROG_ERROR + "unknown experiment 'lenet_mnsit'; `python -m experiments list` lists them\n"
    )


# --------------------------------------------------------------------------------------------
# 6. A results file that is not JSON: one line naming it and the way out, the file untouched
# --------------------------------------------------------------------------------------------

CONFLICTED = """{
<<<<<<< HEAD
 "status": "partial",
=======
 "status": "complete",
>>>>>>> other
 "experiment": "linear_l2"
}
"""


@pytest.mark.parametrize(
    "text, says",
    [
        (CONFLICTED, "it holds git merge-conflict markers"),
        ('{"experiment": "linear_l2", "grid": {"cel', "is not valid JSON (Unterminated"),
        ("[1, 2]", "holds a JSON list, not a results object"),
    ],
)
@pytest.mark.parametrize("extra", [[], ["--forget", "rate=0.5"]])
def test_an_unreadable_results_file_stops_the_run_before_it_starts(
    tmp_path, capsys, text, says, extra
):
    results = tmp_path / "linear_l2" / "smoke.json"
    results.parent.mkdir()
    results.write_text(text)
    code, err = _exit_and_stderr(capsys, ["linear_l2", "--out", str(tmp_path), *extra])
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"{PROG_ERROR}{results} ")
    assert says in err
    assert "fix it, or delete it" in err and "pass another --out" in err
    assert results.read_text() == text  # left as it was
    assert sorted(p.name for p in results.parent.iterdir()) == ["smoke.json"]


def test_report_refuses_an_unreadable_results_file_before_writing(tmp_path, capsys, monkeypatch):
    from experiments import report

    def must_not_run(*args, **kwargs):
        raise AssertionError("write_report ran on an unreadable results file")

    monkeypatch.setattr(report, "write_report", must_not_run)
    results = tmp_path / "linear_l2" / "quick.json"
    results.parent.mkdir()
    results.write_text(CONFLICTED)
    code, err = _exit_and_stderr(capsys, ["report", "--out", str(tmp_path)])
    assert code == 2 and str(results) in err and "merge-conflict" in err
    assert results.read_text() == CONFLICTED


def test_read_results_reads_a_results_object(tmp_path):
    from experiments.harness.results import ResultsFileError, read_results

    path = tmp_path / "ok.json"
    path.write_text(json.dumps({"status": "complete", "results": {"verdict": "reproduced"}}))
    assert read_results(path)["results"] == {"verdict": "reproduced"}
    path.write_text('{"status": ')
    with pytest.raises(ResultsFileError, match=re.escape(str(path))) as err:
        read_results(path)
    assert isinstance(err.value.__cause__, json.JSONDecodeError)


# --------------------------------------------------------------------------------------------
# 7. The documentation's sources
# --------------------------------------------------------------------------------------------


def test_no_docstring_has_a_bare_address_that_renders_as_mailto():
    """``FPR@95`` written bare becomes a mailto: link in the API pages."""
    import importlib
    import inspect

    import dropjax

    bare = re.compile(r"(?<![`\w])[\w.+-]+@[\w-]+(?![`\w])")
    found = []
    for module_name in ["dropjax", "dropjax.mc", "dropjax.uncertainty", "dropjax.acquisition"]:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            doc = inspect.getdoc(getattr(module, name)) or ""
            doc = re.sub(r"``.*?``|:math:`[^`]*`", "", doc, flags=re.S)  # rendered as written
            doc = re.sub(r"\.\. math::\n(?:[ \t]*\n|[ \t]+.*\n?)*", "", doc)  # so is maths
            found += [f"{module_name}.{name}: {m}" for m in bare.findall(doc)]
    assert "FPR@95" in inspect.getdoc(dropjax.uncertainty.fpr_at_tpr)
    assert not found, found


def test_the_notebooks_leave_no_temporary_folder():
    for notebook in sorted((ROOT / "docs" / "notebooks").glob("*.md")):
        text = notebook.read_text()
        assert "mkdtemp(" not in text, f"{notebook.name}: a mkdtemp folder outlives the build"
        made = re.findall(r"(\w+) = tempfile\.TemporaryDirectory\(", text)
        for name in made:
            assert f"{name}.cleanup()" in text, f"{notebook.name}: {name} is never cleaned up"


def test_the_home_pages_figures_are_the_committed_benchmarks():
    index = (ROOT / "docs" / "index.md").read_text()
    assert "benchmarks/results/attention_cpu.md" in index
    table = (ROOT / "benchmarks" / "results" / "attention_cpu.md").read_text()
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| 16384 \| ([^|]+?) \| [^|]+ \| ([\d,.]+) \|", table, flags=re.M)
    }
    blockwise = rows["dropjax blockwise + dropout"]
    materialised = rows["flax.linen + dropout (materialised)"]
    assert f"**{blockwise} MiB**" in index and f"**{materialised} MiB**" in index
    assert f"{rows['jax.nn (xla), no dropout']} MiB" in index
    assert "attention_fn=dropjax.linen.attention_fn" in index
    assert "dropjax.linen.Dropout" in index
