"""dieharder on dropjax's counter-hash mask sampler, next to threefry and Mersenne Twister.

Streams the raw 32-bit words that ``keep_mask`` thresholds (``masks.hash_bits``, evaluated
chunk by chunk with ``masks.hash_bits_at``) to ``dieharder -g 200`` (raw stdin) in four
layouts, and writes a Markdown summary with every p-value and verdict:

* ``consecutive``: elements 0, 1, 2, ... of one key's 1-D mask of 2**32 elements;
* ``strided``: a column-major walk through one key's row-major 65536 x 65536 mask (index
  stride 65536);
* ``across_keys``: element 5 of a 1024-element mask under ``fold_in(key, n)`` for
  n = 0, 1, 2, ... (a test that needs more than 2**20 words reads on past 2**20 keys);
* ``nested``: the bits of Gao et al.'s nested backward mask (``draw_nested_keep``, what
  ``augmented_dropout``'s backward pass uses) at ``p_f = p_b = 1 - sqrt(1/2)``, so each bit
  is 1 with probability 1/2, packed 8 to a byte; chunk ``c`` uses key ``fold_in(key, c)``.

Controls on the same tests: ``threefry`` (``jax.random.bits`` of ``fold_in(key, c)`` per
chunk) and dieharder's own ``mt19937`` (``-g 13``). Usage, on one core (about 10 minutes)::

    nice -n 10 taskset -c 0 python -m benchmarks.sampler_randomness

``--all`` runs dieharder's whole battery (``dieharder -a``, every test at its own default
sample sizes) on each of the six streams, one ``dieharder -a`` process per stream, and
writes ``sampler_randomness_all.md``. That takes hours: run it in the background,

    nice -n 19 taskset -c 0 python -m benchmarks.sampler_randomness --all

Each stream's dieharder output is kept, once the battery finishes, under
``$DROPJAX_RUNS/dieharder`` (default ``~/.cache/dropjax/runs/dieharder``); rerunning skips
the finished streams and writes the summary from what is there, so an interruption loses
at most the stream in progress. ``--summarise`` writes the summary without running.

Needs the ``dieharder`` binary (Debian/Ubuntu: ``apt-get install dieharder``); without it
the script says so and exits. p-values and verdicts are dieharder's own (PASSED unless
p < 0.005 or p > 0.995 for WEAK, p < 1e-6 or p > 1 - 1e-6 for FAILED).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dropjax._src import masks

__all__ = ["main"]

CHUNK = 1 << 20  # words per chunk handed to dieharder
SEED = 20240601

# (dieharder -d number, name). Cheap tests from the "Good" list of `dieharder -l`.
TESTS = [
    (0, "diehard_birthdays"),
    (2, "diehard_rank_32x32"),
    (8, "diehard_count_1s_str"),
    (15, "diehard_runs"),
    (100, "sts_monobit"),
    (101, "sts_runs"),
    (201, "rgb_minimum_distance"),
]
# The nested layout yields 1 word per 32 mask elements: it gets the tests that read less.
NESTED_TESTS = {0, 8, 15, 100, 101}
QUICK_TESTS = {0, 8, 100, 201}


def _consecutive(key) -> Iterator[np.ndarray]:
    words = masks.key_words(key)
    fn = jax.jit(
        lambda c: masks.hash_bits_at(
            words, (1 << 32,), (c * jnp.uint32(CHUNK) + jnp.arange(CHUNK, dtype=jnp.uint32),)
        )
    )
    for c in itertools.count():
        yield np.asarray(fn(jnp.uint32(c % (1 << 12))))


def _strided(key) -> Iterator[np.ndarray]:
    side = 1 << 16
    words = masks.key_words(key)
    cols = CHUNK // side

    @jax.jit
    def fn(c):
        rows = jnp.arange(side, dtype=jnp.uint32)[:, None]
        col = (c * jnp.uint32(cols) + jnp.arange(cols, dtype=jnp.uint32))[None, :]
        return masks.hash_bits_at(words, (side, side), (rows, col)).T.ravel()

    for c in itertools.count():
        yield np.asarray(fn(jnp.uint32(c % (side // cols))))


def _across_keys(key) -> Iterator[np.ndarray]:
    @jax.jit
    def fn(c):
        n = c * jnp.uint32(CHUNK) + jnp.arange(CHUNK, dtype=jnp.uint32)
        words = jax.vmap(lambda i: masks.key_words(jax.random.fold_in(key, i)))(n)
        return jax.vmap(lambda w: masks.hash_bits_at(w, (1024,), (jnp.uint32(5),)))(words)

    for c in itertools.count():
        yield np.asarray(fn(jnp.uint32(c)))


def _nested(key) -> Iterator[np.ndarray]:
    p = 1.0 - math.sqrt(0.5)

    @jax.jit
    def fn(c):
        keep = masks.draw_nested_keep(jax.random.fold_in(key, c), (CHUNK * 32,), p, p)
        return keep

    for c in itertools.count():
        yield np.packbits(np.asarray(fn(jnp.uint32(c)))).view(np.uint32)


def _threefry(key) -> Iterator[np.ndarray]:
    fn = jax.jit(lambda c: jax.random.bits(jax.random.fold_in(key, c), (CHUNK,), jnp.uint32))
    for c in itertools.count():
        yield np.asarray(fn(jnp.uint32(c)))


STREAMS = {
    "consecutive": _consecutive,
    "strided": _strided,
    "across_keys": _across_keys,
    "nested": _nested,
    "threefry": _threefry,
}

_ROW = re.compile(
    r"^\s*(?P<test>\w+)\|\s*(?P<ntup>\d+)\|\s*(?P<tsamples>\d+)\|\s*(?P<psamples>\d+)\|"
    r"\s*(?P<p>[\d.e+-]+)\|\s*(?P<verdict>\w+)"
)


def _parse(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        m = _ROW.match(line)
        if m:
            rows.append(m.groupdict())
    return rows


MT = "mt19937"
"""dieharder's own generator, a control (``-g 13``, seeded with ``SEED``)."""
CONTROLS = ("threefry", MT)


def _dieharder(args: list[str], stream: str, stdout: Any) -> subprocess.Popen:
    """Starts ``dieharder *args`` on ``stream`` (:data:`STREAMS`, or :data:`MT`), writing to
    ``stdout``; a stream of ours is fed to its stdin until dieharder stops reading. Returns
    the process, still to be waited for."""
    if stream == MT:
        return subprocess.Popen([*args, "-g", "13", "-s", "1", "-S", str(SEED)], stdout=stdout)
    proc = subprocess.Popen([*args, "-g", "200"], stdin=subprocess.PIPE, stdout=stdout)
    try:
        for chunk in STREAMS[stream](jax.random.key(SEED)):
            proc.stdin.write(chunk.astype("<u4").tobytes())
    except (BrokenPipeError, OSError):
        pass  # dieharder read what it needed and closed its end
    return proc


def _run(test: int, psamples: int, stream: str) -> tuple[list[dict], float]:
    """One dieharder test on a stream."""
    start = time.perf_counter()
    args = ["dieharder", "-d", str(test), "-p", str(psamples), "-D", "default"]
    proc = _dieharder(args, stream, subprocess.PIPE)
    out = proc.stdout.read().decode()
    if proc.wait() != 0:
        raise RuntimeError(f"dieharder -d {test} on {stream} exited with {proc.returncode}")
    return _parse(out), time.perf_counter() - start


def _state_dir() -> Path:
    root = os.environ.get("DROPJAX_RUNS") or Path.home() / ".cache" / "dropjax" / "runs"
    return Path(root) / "dieharder"


ALL_STREAMS = [*STREAMS, MT]


def _run_all(stream: str, state: Path) -> None:
    """``dieharder -a`` on one stream; its output lands in ``state/<stream>.txt`` when done.

    The output is written line by line to ``<stream>.txt.part`` (so progress can be
    followed) and renamed once dieharder finishes the battery.
    """
    part = state / f"{stream}.txt.part"
    start = time.perf_counter()
    with part.open("w") as log:
        proc = _dieharder(["dieharder", "-a"], stream, log)
        if proc.wait() != 0:
            raise RuntimeError(f"dieharder -a on {stream} exited with {proc.returncode}")
        log.write(f"# wall seconds: {time.perf_counter() - start:.0f}\n")
    part.replace(state / f"{stream}.txt")


def _load_all(state: Path) -> tuple[list[dict], dict[str, float]]:
    results, minutes = [], {}
    for stream in ALL_STREAMS:
        path = state / f"{stream}.txt"
        if not path.exists():
            continue
        text = path.read_text()
        results += [dict(row, stream=stream) for row in _parse(text)]
        m = re.search(r"# wall seconds: (\d+)", text)
        if m:
            minutes[stream] = int(m.group(1)) / 60
    return results, minutes


def main_all(out: Path, summarise_only: bool) -> int:
    state = _state_dir()
    state.mkdir(parents=True, exist_ok=True)
    if not summarise_only:
        for stream in ALL_STREAMS:
            if (state / f"{stream}.txt").exists():
                print(f"{stream}: done earlier ({state / (stream + '.txt')})", flush=True)
                continue
            print(f"{stream}: dieharder -a (follow {state / (stream + '.txt.part')})", flush=True)
            _run_all(stream, state)
    results, minutes = _load_all(state)
    if not results:
        print(f"no finished stream under {state}; nothing to summarise")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sampler_randomness_all.md"
    path.write_text(_markdown_all(results, minutes))
    print(f"wrote {path}")
    return 0


def _markdown_all(results: list[dict], minutes: dict[str, float]) -> str:
    streams = [s for s in ALL_STREAMS if s in {r["stream"] for r in results}]
    missing = [s for s in ALL_STREAMS if s not in streams]
    rows = list(dict.fromkeys((r["test"], r["ntup"]) for r in results))
    lines = [
        "# dieharder's whole battery on the mask sampler",
        "",
        "Command: `nice -n 19 taskset -c 0 python -m benchmarks.sampler_randomness --all` "
        f"(dieharder {_version()} `-a`, each test at its default sample sizes; seed key "
        f"`jax.random.key({SEED})`, jax {jax.__version__}, {sys.platform}). One "
        "`dieharder -a -g 200` per stream, reading the stream from stdin; `mt19937` is "
        f"`dieharder -a -g 13 -S {SEED}`. The streams are described in "
        "`benchmarks/sampler_randomness.py`.",
        "",
        "Verdicts are dieharder's: WEAK when p < 0.005 or p > 0.995, FAILED when p < 1e-6 "
        "or p > 1 - 1e-6. With about 114 p-values per stream, about one WEAK per stream is "
        "expected from any good generator.",
        "",
    ]
    if missing:
        lines += [f"Not finished yet: {', '.join(missing)}.", ""]
    lines += [
        "Wall time per stream: "
        + ", ".join(f"{s} {minutes[s]:.0f} min" for s in streams if s in minutes)
        + " (a niced background job on a core shared with other work: not the battery's "
        "cost on a free core).",
        "",
        "| test | ntup | " + " | ".join(streams) + " |",
        "| --- | --- | " + " | ".join("---" for _ in streams) + " |",
    ]
    for test, ntup in rows:
        cells = []
        for s in streams:
            hit = [
                r for r in results if r["test"] == test and r["ntup"] == ntup and r["stream"] == s
            ]
            cells.append("; ".join(f"{float(r['p']):.4g} {r['verdict']}" for r in hit))
        lines.append(f"| {test} | {ntup} | " + " | ".join(cells) + " |")
    lines += ["", "Per stream: p-values, WEAK and FAILED verdicts:", ""]
    lines += ["| stream | p-values | WEAK | FAILED |", "| --- | --- | --- | --- |"]
    for s in streams:
        mine = [r for r in results if r["stream"] == s]
        weak = sum(r["verdict"] == "WEAK" for r in mine)
        failed = sum(r["verdict"] == "FAILED" for r in mine)
        lines.append(f"| {s} | {len(mine)} | {weak} | {failed} |")
    lines += ["", "Notes:", "", *_notes(results), ""]
    return "\n".join(lines)


def _check_streams() -> None:
    """The streamed words are the sampler's: each layout's first words from hash_bits."""
    key = jax.random.key(SEED)
    first = next(_consecutive(key))[:4096]
    assert (first == np.asarray(masks.hash_bits(key, (4096,)))).all()
    side = 1 << 16
    column = next(_strided(key))[:side]
    mask = masks.hash_bits(key, (8, side))  # row-major index i * side + j, as (side, side)
    assert (column[:8] == np.asarray(mask[:, 0])).all()
    across = next(_across_keys(key))[:3]
    for n in range(3):
        assert across[n] == int(masks.hash_bits(jax.random.fold_in(key, n), (1024,))[5])


def _version() -> str:
    out = subprocess.run(["dieharder", "-l"], capture_output=True, text=True).stdout
    m = re.search(r"dieharder version ([\d.]+)", out)
    return m.group(1) if m else "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--psamples", type=int, default=20, help="dieharder -p (default 20)")
    parser.add_argument("--quick", action="store_true", help="4 tests, psamples 10")
    parser.add_argument("--all", action="store_true", help="dieharder -a on every stream (hours)")
    parser.add_argument(
        "--summarise", action="store_true", help="with --all: write the summary, run nothing"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    _check_streams()
    if shutil.which("dieharder") is None:
        print("dieharder is not installed (apt-get install dieharder); nothing to run")
        return 0
    if args.all:
        return main_all(args.out, args.summarise)
    psamples = 10 if args.quick else args.psamples
    tests = [(d, n) for d, n in TESTS if not args.quick or d in QUICK_TESTS]
    plan = [(s, d) for s in STREAMS for d, _ in tests if s != "nested" or d in NESTED_TESTS]
    plan += [(MT, d) for d, _ in tests]
    results = []
    start = time.perf_counter()
    for stream, test in plan:
        rows, seconds = _run(test, psamples, stream)
        for row in rows:
            results.append(dict(row, stream=stream))
            print(
                f"{stream:12s} {row['test']:22s} ntup={row['ntup']:>2s} p={row['p']:<11s} "
                f"{row['verdict']} ({seconds:.0f} s)",
                flush=True,
            )
    command = "nice -n 10 taskset -c 0 python -m benchmarks.sampler_randomness" + (
        " --quick" if args.quick else f" --psamples {psamples}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("sampler_randomness_quick.md" if args.quick else "sampler_randomness.md")
    minutes = (time.perf_counter() - start) / 60
    path.write_text(_markdown(results, command, psamples, minutes))
    print(f"wrote {path}")
    return 0


def _notes(results: list[dict]) -> list[str]:
    """Tests that every stream fails, controls included, and the hash streams' verdicts."""
    notes = []
    for test in dict.fromkeys(r["test"] for r in results):
        rows = [r for r in results if r["test"] == test]
        if all(r["verdict"] == "FAILED" for r in rows):
            notes.append(
                f"- `{test}` FAILED for every stream, including threefry and dieharder's own "
                "mt19937: in this dieharder build it rejects good generators, so it says "
                "nothing about the sampler."
            )
        elif any(r["verdict"] == "FAILED" for r in rows if r["stream"] in CONTROLS):
            bad = sorted({r["stream"] for r in rows if r["verdict"] == "FAILED"})
            notes.append(
                f"- `{test}` FAILED for a control too ({', '.join(bad)}): a failure there does "
                "not single out the sampler."
            )
    hashed = [r for r in results if r["stream"] not in CONTROLS]
    failed = sorted({r["test"] for r in hashed if r["verdict"] == "FAILED"})
    weak = sorted({f"{r['test']} ({r['stream']})" for r in hashed if r["verdict"] == "WEAK"})
    control_failed = {
        r["test"] for r in results if r["stream"] in CONTROLS and r["verdict"] == "FAILED"
    }
    own = [t for t in failed if t not in control_failed]
    if not failed:
        notes.append("- Counter-hash streams: no FAILED verdict")
    elif not own:
        notes.append("- Counter-hash streams: FAILED only where the controls fail too")
    else:
        notes.append(f"- Counter-hash streams FAILED where the controls pass: {', '.join(own)}")
    notes[-1] += f"; WEAK: {', '.join(weak) if weak else 'none'}."
    return notes


def _markdown(results: list[dict], command: str, psamples: int, minutes: float) -> str:
    lines = [
        "# dieharder on the mask sampler",
        "",
        f"Command: `{command}` (dieharder {_version()}, `-p {psamples}`, seed key "
        f"`jax.random.key({SEED})`, jax {jax.__version__}, {sys.platform}).",
        "",
        "Streams are described in `benchmarks/sampler_randomness.py`: `consecutive`, "
        "`strided`, `across_keys` and `nested` are dropjax's counter hash; `threefry` "
        "(`jax.random.bits`) and `mt19937` (dieharder's own generator) are controls run on "
        "the same tests. Verdicts are dieharder's; with a few p-values per test a WEAK "
        "verdict is expected now and then for any generator (about 1 test in 100 at "
        "p < 0.005 or p > 0.995).",
        "",
        f"Wall time of the run: {minutes:.1f} min.",
        "",
    ]
    tests = sorted({r["test"] for r in results}, key=[n for _, n in TESTS].index)
    streams = list(dict.fromkeys(r["stream"] for r in results))
    lines += ["| test | ntup | " + " | ".join(streams) + " |"]
    lines += ["| --- | --- | " + " | ".join("---" for _ in streams) + " |"]
    for test in tests:
        ntups = sorted({int(r["ntup"]) for r in results if r["test"] == test})
        for ntup in ntups:
            cells = []
            for s in streams:
                hit = [
                    r
                    for r in results
                    if r["test"] == test and r["stream"] == s and int(r["ntup"]) == ntup
                ]
                cells.append("; ".join(f"{float(r['p']):.4g} {r['verdict']}" for r in hit))
            lines.append(f"| {test} | {ntup} | " + " | ".join(cells) + " |")
    lines += ["", "Notes:", "", *_notes(results), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
