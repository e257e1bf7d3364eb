"""Shared fixtures: the demo corpus, one model trained on it per test session, the shared data."""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parent.parent
DEMO_CORPUS = ROOT / "data" / "demo" / "demo_corpus.csv"
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_file(relative: str) -> Path:
    """A file under ../shared/data, or a skip saying that the folder is absent."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared benchmark data lives outside the repository)")
    return path


# The longest modules (measured with --junitxml), started first: with `-n 2 --dist loadfile
# --no-loadscope-reorder` each worker takes whole modules in collection order, so a long module
# collected last would leave one core idle while the other finishes it (xdist's own reordering, by
# number of tests, put the two-test README module last).
LONGEST_FIRST = [  # seconds per module (setup, call, teardown), measured 2026-12-04 21:10 with --junitxml
    "tests/service/test_proof.py",  # 126
    "tests/service/test_fuzz.py",  # 114
    "tests/test_readme.py",  # 107
    "tests/models/test_encoder.py",  # 107
    "tests/service/web/test_console_hostile.py",  # 87
    "tests/notebooks/test_notebooks.py",  # 45
    "tests/service/web/test_console_pages.py",  # 38
    "tests/service/test_api_complaints.py",  # 31
    "tests/service/test_api_admin.py",  # 30
    "tests/service/test_letters.py",  # 29
    "tests/service/test_digest_api.py",  # 28
    "tests/service/web/test_console_browser.py",  # 24
    "tests/service/test_cli.py",  # 21
    "tests/models/test_finetune.py",  # 18
    "tests/service/test_hostile_documents.py",  # 16
    "tests/training/test_cli.py",  # 15
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order


# Notebook wall times reach this process (the xdist controller, or the only one) in test reports
# and are printed at the end of the run.
NOTEBOOK_WALL_TIME = "notebook wall time"
_notebook_wall_times: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        _notebook_wall_times.update(value for key, value in report.user_properties if key == NOTEBOOK_WALL_TIME)


def pytest_terminal_summary(terminalreporter) -> None:
    if _notebook_wall_times:
        terminalreporter.write_sep("-", "notebooks: wall time")
        for name, seconds in sorted(_notebook_wall_times.items()):
            terminalreporter.write_line(f"{name}: {seconds:.1f} s")


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


def built_once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder `build` fills once per test run: under xdist the first worker to ask builds it while
    the others wait on a lock, then all read it (callers copy what they change)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    root = tmp_path_factory.getbasetemp().parent / "built-once"  # this run's folder, shared by its workers
    root.mkdir(exist_ok=True)
    folder = root / name
    with FileLock(root / f"{name}.lock"):
        if not (folder / ".complete").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".complete").touch()
    return folder


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory, demo_corpus):
    """A registry holding one champion trained on the demo corpus (80/20 stratified split); trained
    once per run, each worker gets its own copy."""
    from models.registry import Registry
    from training.data import load_dataset
    from training.fit import TrainParams
    from training.pipeline import promote, train

    def build(folder: Path) -> None:
        result = train(load_dataset(demo_corpus), TrainParams(), Registry(folder / "registry"))
        promote(Registry(folder / "registry"), result.version)
        (folder / "result.pickle").write_bytes(pickle.dumps(result))

    built = built_once_per_run(tmp_path_factory, "trained-registry", build)
    own = tmp_path_factory.mktemp("registry")
    shutil.copytree(built / "registry", own, dirs_exist_ok=True)
    return Registry(own), pickle.loads((built / "result.pickle").read_bytes())


@pytest.fixture(scope="session")
def demo_bundle(trained_registry):
    registry, _ = trained_registry
    return registry.load("current")


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory, demo_corpus) -> Path:
    """A tiny random BERT (hidden 32, 2 layers) whose character vocabulary covers the demo corpus: the
    hybrid and finetune backends run on it in seconds. Embeddings it caches go to a temporary folder:
    XIAOBAO_CACHE for entry points (the CLI, subprocesses), the model settings in scope for library
    code run in this process (an Encoder made without a cache folder)."""
    import pandas as pd

    from models.settings import current, in_scope
    from tests.tiny_bert import build_tiny_bert

    cache = tmp_path_factory.mktemp("embedding-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("XIAOBAO_CACHE", str(cache))
    texts = pd.read_csv(demo_corpus)["text"].tolist() + ["my card was charged twice ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789"]
    folder = build_tiny_bert(tmp_path_factory.mktemp("tiny") / "tiny_bert", texts)
    with in_scope(current().but(cache=cache)):
        yield folder
    mp.undo()


@pytest.fixture(scope="session")
def small_demo(demo_corpus, tmp_path_factory) -> Path:
    """240 demo rows: every head, enough for a stratified validation split, quick to fine-tune."""
    import pandas as pd

    frame = pd.read_csv(demo_corpus).sample(240, random_state=3)
    path = tmp_path_factory.mktemp("small-demo") / "small.csv"
    frame.to_csv(path, index=False)
    return path


def e5_checkpoint() -> Path:
    """The converted e5 if `make encoder` built it; otherwise the test is skipped (never built here)."""
    folder = ROOT / "models" / "encoder_e5"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"{folder} is not built (run `make encoder` to include the tests on the real e5)")
    return folder
