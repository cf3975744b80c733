"""Gao et al. Tables 4-5 (claim 3): smoke run, not-run path, substitutes, plans, verdicts."""

from __future__ import annotations

import jax
import pytest

from experiments.claims import gao_tables45 as t45
from experiments.harness import data as data_lib
from tests.experiments.smoke import run_checked


def _only(available: set[str], monkeypatch) -> None:
    """Makes :func:`experiments.harness.data.load` find exactly the ``available`` datasets."""

    def load(name, **kw):
        if name not in available:
            raise data_lib.DatasetNotFoundError(f"{name} is not here (test)")
        return name

    monkeypatch.setattr(data_lib, "load", load)


def test_smoke_runs_both_tables_as_cells(tmp_path, data_dir):
    payload, out = run_checked(tmp_path, t45.NAME)
    results = payload["results"]
    table4, table5 = results["cells"]["table4_synthetic"], results["cells"]["table5_synthetic"]
    assert table4["status"] == table5["status"] == "run"
    assert table4["augmentation_applied"] == "none"
    assert table5["augmentation_applied"] == "pad 4 + random 8x8 crop + horizontal flip"
    assert table4["coverage"] == pytest.approx(16 / 9000)
    assert table5["coverage"] == pytest.approx(16 / 640_000)
    for part in (table4, table5):
        assert part["substitute"] and part["pooled"]["difference"]["n"] == 2
        assert part["pooled"]["headline"] in {"indicative", "inconclusive"}
    ev = results["evidence"]
    assert ev["coverage"] == pytest.approx(16 / 640_000) and ev["data"] == "SUBSTITUTE"
    assert results["verdict"] in {"indicative", "inconclusive"}
    assert sorted(payload["grid"]["cells"]) == sorted(
        f"{t}/synthetic/{arm}@0.3/seeds=0-1" for t in ("table4", "table5") for arm in t45.ARMS
    )
    assert (out / results["figure"]).stat().st_size > 0
    text = t45.render(results)
    assert "0.9240" in text and "0.6786" in text  # the paper's tables next to ours
    assert "64k" in text and "SUBSTITUTE" in text
    assert t45.partial(payload)["verdict"] == results["verdict"]  # the report's view


def test_not_run_without_any_data(tmp_path, data_dir, monkeypatch):
    _only(set(), monkeypatch)
    payload, out = run_checked(tmp_path, t45.NAME, "quick")
    results = payload["results"]
    assert results["not_run"] is True and results["verdict"] == "not run"
    for dataset in ("svhn", "cifar10", "cifar100", "mnist", "fashion_mnist"):
        assert dataset in results["reason"]
    assert "no substitute" in results["cells"]["table5_cifar100"]["reason"]
    text = t45.render(results)
    assert "not run" in text and "0.6786" in text
    assert not list(out.glob("*.png"))


def test_substitutes_and_the_accelerator_rule(monkeypatch):
    _only({"mnist", "fashion_mnist"}, monkeypatch)
    parts = {p.key: p for p in t45.PRESETS["paper"].parts}
    assert t45.resolve(parts["table4_svhn"], {}) == ("mnist", None)
    assert t45.resolve(parts["table4_cifar10"], {}) == ("fashion_mnist", None)
    name, why = t45.resolve(parts["table5_cifar100"], {})
    assert name is None and "no substitute" in why
    name, why = t45.resolve(parts["table5_cifar10"], {})
    if jax.default_backend() == "cpu":
        assert name is None and "accelerator" in why
    else:
        assert name == "fashion_mnist"
    _only({"svhn", "mnist"}, monkeypatch)  # the real dataset wins over its substitute
    assert t45.resolve(parts["table4_svhn"], {}) == ("svhn", None)


def test_presets_follow_the_paper():
    paper = {p.key: p for p in t45.PRESETS["paper"].parts}
    convnet, resnet = paper["table4_cifar10"].train, paper["table5_cifar10"].train
    assert (convnet.iterations, convnet.lr_boundaries) == (9000, (4000,))
    assert convnet.learning_rate == 1e-3
    assert (resnet.iterations, resnet.lr_boundaries, resnet.batch_size) == (
        640_000,
        (320_000, 480_000),
        128,
    )
    assert resnet.nesterov and resnet.weight_decay == 1e-3
    assert all(p.rates == t45.RATES for p in paper.values())
    # Augmentation exactly where the paper uses it: ResNet-20 on CIFAR, not SVHN or Table 4.
    assert {k for k, p in paper.items() if p.augment} == {"table5_cifar10", "table5_cifar100"}
    assert paper["table5_cifar10"].backward_rate == 1e-4
    assert paper["table4_svhn"].backward_rate == paper["table5_svhn"].backward_rate == 2e-4
    quick = {p.key: p for p in t45.PRESETS["quick"].parts}
    assert quick["table4_svhn"].rates == (0.2,) and quick["table4_cifar10"].rates == (0.3,)
    assert quick["table4_svhn"].train.iterations == 400
    assert quick["table4_svhn"].coverage == pytest.approx(400 / 9000)
    ids = [c.id for c in t45.cells(quick["table4_cifar10"], [0, 1, 2, 3, 4, 5, 6, 7])]
    assert ids == [
        "table4/cifar10/standard@0.3/seeds=0-3",
        "table4/cifar10/augmented@0.3/seeds=0-3",
        "table4/cifar10/standard@0.3/seeds=4-7",
        "table4/cifar10/augmented@0.3/seeds=4-7",
    ]


def test_verdicts_against_the_papers_effect():
    part = next(p for p in t45.PRESETS["paper"].parts if p.key == "table4_cifar10")
    base = [0.70, 0.71, 0.72, 0.73]
    jitter = [0.0, 0.0004, -0.0004, 0.0002]

    def finals(shift: float) -> dict:
        up = {s: v + shift + jitter[s] for s, v in enumerate(base)}
        return {
            "standard": {k: dict(enumerate(base)) for k in ("0.1", "0.2", "0.3")},
            "augmented": {k: up for k in ("0.1", "0.2", "0.3")},
        }

    full = {"coverage": 1.0, "substitute": False}
    decided = t45.decide(part, finals(0.01), **full)
    assert decided["comparisons"]["0.3"]["delta"] == pytest.approx(0.7606 - 0.7523)
    assert decided["pooled"]["delta"] == pytest.approx((0.0017 + 0.0038 + 0.0083) / 3)
    assert decided["verdict"] == decided["pooled"]["headline"] == "reproduced"
    assert decided["pooled"]["difference"]["n"] == 12
    assert t45.decide(part, finals(0.0), **full)["verdict"] == "refuted"
    assert t45.decide(part, finals(-0.01), **full)["verdict"] == "contradicted"
    short = t45.decide(part, finals(0.01), coverage=0.04, substitute=True)
    assert short["verdict"] == "reproduced" and short["pooled"]["headline"] == "indicative"
    sub = t45.decide(part, finals(0.01), coverage=1.0, substitute=True)
    assert sub["pooled"]["headline"] == "reproduced (SUBSTITUTE data)"
    one_seed = finals(0.01)
    one_seed["augmented"] = {k: {0: 0.8} for k in ("0.1", "0.2", "0.3")}
    assert t45.decide(part, one_seed, **full)["verdict"] == "not tested"
