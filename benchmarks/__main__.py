"""Runs the benchmark suite side by side and writes results/<device>.json, .md and .png.

Usage: ``python -m benchmarks [--quick] [--out benchmarks/results]``. Timings are the
minimum over repeats after warm-up; memory is XLA's compiled temporary allocation.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import flax
import jax

from benchmarks import ops, train_step
from benchmarks.common import device_label

GOALS = {
    "dropout forward f32 / roofline": 2.5,
    "training step time, dropout / none": 1.10,
    "training step temp memory, dropout / none": 1.15,
    "augmented / standard step time": 1.15,
}


def _summary(op_rows, step_rows):
    out = {}
    f32 = [r for r in op_rows if r["dtype"] == "float32" and r["pass"] == "fwd"]
    for impl in ("dropjax", "flax.linen.Dropout"):
        ratios = [r["ratio"] for r in f32 if r["impl"] == impl]
        if ratios:
            out[f"dropout forward f32 / roofline [{impl}]"] = max(ratios)
    steps = {r["impl"]: r for r in step_rows}
    none = steps["no dropout"]
    for impl in ("flax.linen.Dropout", "dropjax.linen.Dropout"):
        out[f"training step time, dropout / none [{impl}]"] = (
            steps[impl]["seconds"] / none["seconds"]
        )
        out[f"training step temp memory, dropout / none [{impl}]"] = (
            steps[impl]["temp_bytes"] / none["temp_bytes"]
        )
    aug = steps["dropjax augmented (0.5/1e-4)"]
    out["augmented / standard step time [dropjax]"] = (
        aug["seconds"] / steps["dropjax.linen.Dropout"]["seconds"]
    )
    return out


def _markdown(payload) -> str:
    lines = [f"# Benchmarks on {payload['device']}", "", f"Command: `{payload['command']}`", ""]
    lines += [
        "## Summary against the goals",
        "",
        "| figure | value | goal |",
        "| --- | --- | --- |",
    ]
    for name, value in payload["summary"].items():
        goal = next((g for k, g in GOALS.items() if name.startswith(k)), None)
        mark = "" if goal is None else (" (met)" if value <= goal else " (not met)")
        lines.append(f"| {name} | {value:.2f}x | <= {goal}x{mark} |")
    lines += [
        "",
        "## Dropout op",
        "",
        "| dtype | rate | impl | pass | ms | / roofline |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in payload["op"]:
        rate = "" if r["rate"] is None else r["rate"]
        lines.append(
            f"| {r['dtype']} | {rate} | {r['impl']} | {r['pass']} | "
            f"{r['seconds'] * 1e3:.2f} | {r['ratio']:.2f} |"
        )
    lines += [
        "",
        "## Training step (MLP 784-2048x3-10, batch 512, dropout 0.5, SGD)",
        "",
        "| impl | ms | temp MiB |",
        "| --- | --- | --- |",
    ]
    for r in payload["train_step"]:
        lines.append(f"| {r['impl']} | {r['seconds'] * 1e3:.1f} | {r['temp_bytes'] / 2**20:.1f} |")
    for section in payload.get("extra_sections", []):
        lines += ["", section]
    return "\n".join(lines) + "\n"


def _plot(payload, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in payload["op"] if r["rate"] is not None and r["pass"] == "fwd"]
    labels = sorted({r["impl"] for r in rows})
    groups = sorted({(r["dtype"], r["rate"]) for r in rows})
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(labels)
    for i, impl in enumerate(labels):
        vals = [
            next(r["ratio"] for r in rows if r["impl"] == impl and (r["dtype"], r["rate"]) == g)
            for g in groups
        ]
        ax.bar([j + i * width for j in range(len(groups))], vals, width, label=impl)
    ax.axhline(2.5, color="k", ls="--", lw=1, label="goal 2.5x")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{d}, p={r}" for d, r in groups])
    ax.set_ylabel("forward time / roofline (x*c)")
    ax.set_yscale("log")
    ax.set_title(f"Dropout forward on {payload['size']:,} elements, {payload['device']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- bench-summary:start -->", "<!-- bench-summary:end -->"


def _update_readme(payload) -> None:
    """Replaces README's benchmark table (between the markers) with this run's summary."""
    if not README.exists():
        return
    text = README.read_text()
    if START not in text or END not in text:
        return
    md = _markdown(payload)
    lines = md.splitlines()
    i = lines.index("## Summary against the goals") + 2
    table = []
    for line in lines[i:]:
        if not line.startswith("|"):
            break
        table.append(line)
    block = "\n".join(
        [
            f"Device `{payload['device']}`, command `{payload['command']}` "
            "([full table](https://dropjax.readthedocs.io/en/latest/benchmarks/"
            f"{payload['device']}.html)):",
            "",
            *table,
        ]
    )
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{block}\n{END}{tail}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (ends in minutes)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument(
        "--update-readme", action="store_true", help="also put this device's table in README"
    )
    args = parser.parse_args(argv)
    repeats = 5 if args.quick else 15
    start = time.time()
    size = 16 * 1024 * 1024
    print(f"[benchmarks] dropout op on {size:,} elements ...", flush=True)
    op_rows = ops.run(size=size, repeats=repeats)
    print("[benchmarks] training step ...", flush=True)
    step_rows = train_step.run(repeats=repeats)
    payload = {
        "device": device_label(),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "python": platform.python_version(),
        "command": "python -m benchmarks" + (" --quick" if args.quick else ""),
        "size": size,
        "repeats": repeats,
        "op": op_rows,
        "train_step": step_rows,
    }
    extra = []
    for name in ("mc_bench", "harness_step"):
        try:
            module = __import__(f"benchmarks.{name}", fromlist=["run"])
        except ImportError:
            continue
        if not hasattr(module, "run"):
            continue
        print(f"[benchmarks] {name} ...", flush=True)
        result = module.run(quick=args.quick)
        payload[name] = result["rows"]
        extra.append(result["markdown"])
    payload["extra_sections"] = extra
    payload["summary"] = _summary(op_rows, step_rows)
    payload["wall_time_s"] = round(time.time() - start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / payload["device"]
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    stem.with_suffix(".md").write_text(_markdown(payload))
    _plot(payload, stem.with_suffix(".png"))
    if payload["device"] == "cpu" or args.update_readme:
        _update_readme(payload)
    print(_markdown(payload))
    print(f"[benchmarks] wrote {stem}.json/.md/.png in {payload['wall_time_s']} s")


if __name__ == "__main__":
    main()
