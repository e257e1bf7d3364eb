"""Metric floors: on the demo corpus's held-out split, and on requests written by other people."""

import pandas as pd

from tests.conftest import shared_file
from training.data import load_dataset
from training.evaluate import evaluate


def test_held_out_demo_split_floors(trained_registry):
    _, result = trained_registry
    m = result.metrics
    assert m["n"] >= 700
    assert m["category"]["macro_f1"] >= 0.75, m["category"]["macro_f1"]
    assert m["cause"]["macro_f1"] >= 0.70, m["cause"]["macro_f1"]
    assert m["risk"]["roc_auc"] >= 0.90, m["risk"]
    assert m["risk"]["ece"] <= 0.06, m["risk"]
    assert set(m["category"]["per_class"]) == set(pd.read_csv("data/demo/demo_corpus.csv")["category"])


def test_generalises_to_bank_dev(demo_bundle):
    """bank_dev was written by someone else: a model that memorised our phrasing would fall here."""
    ds = load_dataset(shared_file("bank_dev/bank_requests_dev.csv"), for_training=False)
    m = evaluate(demo_bundle, ds)
    assert m["category"]["macro_f1"] >= 0.78, m["category"]
    assert m["cause"]["macro_f1"] >= 0.70, m["cause"]
    assert m["risk"]["roc_auc"] >= 0.88, m["risk"]


def test_card_thresholds_are_from_validation(trained_registry):
    registry, result = trained_registry
    card = registry.card(result.version)
    assert card["risk_thresholds"]["高"] >= card["risk_thresholds"]["中"] > 0
    assert abs(sum(card["risk_reference_histogram"]) - 1) < 1e-3
