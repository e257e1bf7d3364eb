"""The notebooks run end to end, as `python notebooks/execute.py` runs them, on the session's trained
champion; each executed notebook is kept under test-artifacts/notebooks/ and its wall time reported."""

from __future__ import annotations

import importlib.util
import os

import pytest

from tests.conftest import ROOT
from tests.notebooks.conftest import WALL_TIMES

ARTIFACTS = ROOT / "test-artifacts" / "notebooks"
_spec = importlib.util.spec_from_file_location("notebook_execute", ROOT / "notebooks" / "execute.py")
execute_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute_module)
nbsupport_spec = importlib.util.spec_from_file_location("nbsupport", ROOT / "notebooks" / "nbsupport.py")
nbsupport = importlib.util.module_from_spec(nbsupport_spec)
nbsupport_spec.loader.exec_module(nbsupport)


def run(name: str, out=ARTIFACTS, label: str | None = None):
    """Execute the notebook whose name starts with `name`; (all its text output, number of figures)."""
    (path,) = execute_module.notebooks([name])
    nb, _, seconds = execute_module.execute(path, out)
    WALL_TIMES[label or path.stem] = seconds
    texts, figures = [], 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", f"{path.stem}: {output['ename']}: {output['evalue']}"
            texts.append(output.get("text", ""))
            data = output.get("data", {})
            figures += "image/png" in data
            texts += [str(data[kind]) for kind in ("text/plain", "text/markdown", "text/html") if kind in data]
    return "\n".join(texts), figures


@pytest.fixture
def champion(trained_registry, monkeypatch):
    """The kernel inherits the environment: it serves the session's trained registry."""
    registry, result = trained_registry
    monkeypatch.setenv("XIAOBAO_REGISTRY", str(registry.root))
    return registry, result


def shared_present() -> bool:
    folder = nbsupport.shared_dir()
    return all((folder / f).is_file() for f in (nbsupport.CFPB, nbsupport.BANK_DEV))


@pytest.mark.timeout(300)
def test_01_data_exploration(champion):
    text, figures = run("01")
    written = sum(1 for part in (ROOT / "data/demo/parts").glob("*.jsonl") for line in part.open(encoding="utf-8")
                  if line.strip())
    assert f"demo corpus: {written:,} requests" in text and figures >= 3
    if shared_present():
        assert "CFPB: " in text and "bank_dev: 200 requests" in text and "binomial test" in text
    else:
        assert nbsupport.FALLBACK in text


@pytest.mark.timeout(300)
def test_01_without_shared_data_falls_back_and_says_so(champion, tmp_path, monkeypatch):
    monkeypatch.setenv("XIAOBAO_SHARED_DATA", str(tmp_path / "empty"))
    text, figures = run("01", tmp_path, label="01-data-exploration (no shared data)")
    assert nbsupport.FALLBACK in text
    assert "CFPB: " not in text and "bank_dev: " not in text and figures >= 3


@pytest.mark.timeout(300)
def test_02_model_evaluation(champion):
    registry, _ = champion
    text, figures = run("02")
    assert f"model {registry.current()}" in text
    assert figures >= 4  # confusion matrices, reliability + PR, threshold trade-off
    assert "precision" in text and "recall" in text and "macro-F1" in text  # the per-class tables
    assert "alerts_per_week" in text and "high_recall" in text  # the threshold table


@pytest.mark.timeout(300)
def test_03_error_analysis_and_retraining(champion):
    registry, _ = champion
    before = registry.current()
    text, _ = run("03")
    assert "wrong; the five the model was surest of" in text and "missed disputes" in text
    assert "outcomes recorded" in text and "wrote " in text and "labelled requests" in text  # export-labels
    assert "decision: PROMOTED" in text or "decision: REFUSED" in text
    assert "PromotionRefused: " in text and "scores worse than champion" in text  # the weak challenger
    if (nbsupport.shared_dir() / nbsupport.BANK_DEV).is_file():  # recalibration on bank_dev rows 1-120
        assert "outcomes = data rows 1-120" in text and "held out = rows 121-200 (80 rows)" in text
        assert "recalibrated version " in text and "Platt map" in text and "log-loss" in text
        assert "recalibrated version: PROMOTED" in text or "recalibrated version: REFUSED" in text
        assert "on the 80 held-out rows (data rows 121-200)" in text and "held-out risk log-loss" in text
    else:
        assert "skipping the recalibration demonstration" in text
    assert registry.current() == before and os.listdir(registry.versions_dir) == [before]
