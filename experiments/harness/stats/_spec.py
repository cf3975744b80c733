"""Decision specs, fixed before the data, and how their contrasts are decided."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any

from experiments.harness.stats._intervals import paired_difference
from experiments.harness.stats._rule import CURRENT_RULE, combine_decisions, decide


# ------------------------------------------------------------------------------- specs
@dataclasses.dataclass(frozen=True)
class Contrast:
    """One stated comparison: ``other - base`` in the cell ``cell`` (a rate, say), claimed to
    have sign ``sign`` and the paper's size ``delta`` (its own difference for that cell).

    ``claim`` names the sub-claim it belongs to; ``source`` says where the paper states it.
    """

    claim: str
    other: str
    base: str
    cell: str
    sign: int
    delta: float
    source: str = ""

    @property
    def label(self) -> str:
        return f"{self.other} - {self.base} @ {self.cell}"


@dataclasses.dataclass(frozen=True)
class DecisionSpec:
    """A claim's decision, fixed before its data: what is compared, against what, and how
    the cells combine.

    Attributes:
      claims: ``{key: (statement, combination)}``; the combination is one of
        :data:`COMBINATIONS` (how that sub-claim's cells make its verdict).
      contrasts: every stated comparison, each decided by :func:`verdict` against its own δ.
      pairs: the planned number of paired seeds.
      pooling: how the headline pools cells (words; "none": the sub-claims are the headline).
      control: the positive control (a contrast the design must reproduce before anything is
        decided from it), or None.
      control_needs: the verdict the control must reach.
      rule: the verdict rule (:data:`RULES`).
      headline: the sub-claims the headline combines (all when empty).
    """

    claims: dict[str, tuple[str, str]]
    contrasts: tuple[Contrast, ...]
    pairs: int
    pooling: str = "none"
    control: Contrast | None = None
    control_needs: tuple[str, ...] = ("reproduced",)
    rule: str = CURRENT_RULE
    headline: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DecisionSpec:
        """The spec :meth:`to_json` wrote (as recorded in a results file)."""
        control = data.get("control")
        return cls(
            claims={k: tuple(v) for k, v in data["claims"].items()},
            contrasts=tuple(Contrast(**c) for c in data["contrasts"]),
            pairs=data["pairs"],
            pooling=data.get("pooling", "none"),
            control=None if control is None else Contrast(**control),
            control_needs=tuple(data.get("control_needs", ("reproduced",))),
            rule=data.get("rule", CURRENT_RULE),
            headline=tuple(data.get("headline", ())),
        )


def spec_hash(spec: dict[str, Any] | DecisionSpec) -> str:
    """A short hash of a decision spec's canonical JSON (what the results file records).

    Examples:
      >>> from experiments.harness.stats import spec_hash
      >>> spec_hash({"b": 1, "a": [0.5]}) == spec_hash({"a": [0.5], "b": 1})
      True
    """
    if isinstance(spec, DecisionSpec):
        spec = spec.to_json()
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def spec_record(
    specs: dict[str, DecisionSpec], recorded: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a results file says of its decision specs at summarise time: for each key, the
    hash of the spec in force now and the one recorded when the first cell started (None:
    nothing was recorded then), and whether any changed after the data.

    Examples:
      >>> from experiments.harness.stats import Contrast, DecisionSpec, spec_hash, spec_record
      >>> spec = DecisionSpec({"a": ("b beats a", "every")},
      ...                     (Contrast("a", "b", "a", "all", +1, 0.01),), pairs=4)
      >>> rec = spec_record({"x": spec}, {"x": {"hash": spec_hash(spec)}})
      >>> rec["changed"], rec["at_start_recorded"]
      (False, True)
      >>> spec_record({"x": spec})["at_start_recorded"]
      False
    """
    keys = {}
    for key, spec in specs.items():
        start = (recorded or {}).get(key)
        keys[key] = {
            "hash": spec_hash(spec),
            "rule": spec.rule,
            "at_start": None if start is None else start["hash"],
            "recorded": None if start is None else start.get("recorded"),
        }
    return {
        "by": "harness",
        "specs": keys,
        "at_start_recorded": all(k["at_start"] is not None for k in keys.values()),
        "changed": any(k["at_start"] not in (None, k["hash"]) for k in keys.values()),
    }


def _almost_all(decisions: list[dict]) -> dict:
    """ "In almost all cases": reproduced when every cell but at most one is reproduced (in
    either wording) and none is contradicted; else as :func:`combine_decisions`."""
    verdicts = [d["verdict"] for d in decisions]
    ok = [v in ("reproduced", "reproduced-smaller") for v in verdicts]
    if len(decisions) >= 3 and sum(ok) >= len(ok) - 1 and "contradicted" not in verdicts:
        out = combine_decisions([d for d, good in zip(decisions, ok, strict=True) if good])
        return out
    return combine_decisions(decisions)


COMBINATIONS: dict[str, Callable[[list[dict]], dict]] = {
    "every": lambda ds: combine_decisions(ds, every=True),
    "all": combine_decisions,
    "almost-all": _almost_all,
}
"""How a sub-claim's cells combine: ``every`` (the claim asserts each cell: one refuted cell
refutes it), ``all`` (every cell reproduced / refuted; else inconclusive), ``almost-all``
(all but one cell reproduced, none contradicted, with three or more cells)."""


def combine_by(combination: str, decisions: list[dict]) -> dict:
    """The sub-claim's verdict from its cells' decisions under ``combination``."""
    return COMBINATIONS[combination](decisions)


def decide_contrasts(
    spec: DecisionSpec,
    paired: Callable[[str, str], tuple[list[float], list[float]]],
    *,
    coverage: float,
    substitute: bool = False,
    control_pairs: int | None = None,
) -> dict[str, Any]:
    """Decides every contrast of ``spec`` whose data exist, and combines each sub-claim.

    The positive control is decided once it has ``control_pairs`` pairs (default: the spec's
    planned ``pairs``); before that it is pending.

    ``paired(arm, cell)`` returns the arm's per-seed values in that cell, and the seeds, as
    ``(values, seeds)``; a contrast is decided on the seeds both sides have (at least two).

    Returns:
      ``{"claims": {key: {"claim", "combination", "cells", verdict fields}}, "control":
      decision or None, "control_passed": bool, or None while the control has fewer than
      the spec's planned pairs (or none), "rule"}``.
    """

    def one(c: Contrast) -> dict | None:
        (bv, bs), (ov, os_) = paired(c.base, c.cell), paired(c.other, c.cell)
        b, o = dict(zip(bs, bv, strict=True)), dict(zip(os_, ov, strict=True))
        common = sorted(set(b) & set(o))
        if len(common) < 2:
            return None
        diff = paired_difference([b[x] for x in common], [o[x] for x in common])
        decision = decide(
            diff, c.sign, c.delta, coverage=coverage, substitute=substitute, rule=spec.rule
        )
        return {"comparison": c.label, "source": c.source, "difference": diff, **decision}

    claims = {}
    for key, (text, combination) in spec.claims.items():
        cells = [d for c in spec.contrasts if c.claim == key if (d := one(c)) is not None]
        claims[key] = {
            "claim": text,
            "combination": combination,
            "cells": cells,
            **combine_by(combination, cells),
        }
    control = one(spec.control) if spec.control is not None else None
    # Decided only at the planned number of pairs: before that the control is pending (None).
    needed = spec.pairs if control_pairs is None else control_pairs
    pending = control is None or control["difference"]["n"] < needed
    passed = None if pending else control["verdict"] in spec.control_needs
    return {"claims": claims, "control": control, "control_passed": passed, "rule": spec.rule}
