"""Shared fixtures: the demo corpus, one model trained on it per test session, the shared data."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO_CORPUS = ROOT / "data" / "demo" / "demo_corpus.csv"
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_file(relative: str) -> Path:
    """A file under ../shared/data, or a skip saying that the folder is absent."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared benchmark data lives outside the repository)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _private_registry(tmp_path_factory):
    """No test may touch the developer's own registry under models/registry."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XIAOBAO_REGISTRY", str(tmp_path_factory.mktemp("default-registry")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def demo_corpus() -> Path:
    if not DEMO_CORPUS.is_file():
        from training.demo_corpus import main

        main([])
    return DEMO_CORPUS


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory, demo_corpus):
    """A registry holding one champion trained on the demo corpus (80/20 stratified split)."""
    from models.registry import Registry
    from training.data import load_dataset
    from training.fit import TrainParams
    from training.pipeline import promote, train

    registry = Registry(tmp_path_factory.mktemp("registry"))
    result = train(load_dataset(demo_corpus), TrainParams(), registry)
    promote(registry, result.version)
    return registry, result


@pytest.fixture(scope="session")
def demo_bundle(trained_registry):
    registry, _ = trained_registry
    return registry.load("current")
