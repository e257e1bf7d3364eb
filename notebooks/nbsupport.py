"""What the notebooks share: where the repository, the demo corpus, the shared data and the model are,
and Chinese labels on the charts. Imported by each notebook's first cell; no notebook logic lives here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # models, training, service importable without `pip install -e .`
    sys.path.insert(0, str(ROOT))

DEMO_CORPUS = ROOT / "data" / "demo" / "demo_corpus.csv"
CFPB = "cfpb/complaints_2015_2016.csv"
BANK_DEV = "bank_dev/bank_requests_dev.csv"
FALLBACK = "../shared/data is absent: showing the demo corpus only"


def shared_dir() -> Path:
    """$XIAOBAO_SHARED_DATA, else ../shared/data beside the repository."""
    return Path(os.environ.get("XIAOBAO_SHARED_DATA") or ROOT.parent / "shared" / "data")


def shared_file(relative: str) -> Path | None:
    """A file of the shared data, or None after saying (visibly, in the notebook) that it is absent.
    The files are read in place and never copied into the repository (their licences forbid it)."""
    path = shared_dir() / relative
    if path.is_file():
        return path
    note(f"{FALLBACK} ({relative} not found under {shared_dir()})")
    return None


def note(text: str) -> None:
    """A line the reader should not miss: bold in Jupyter, plain when run as a script."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(f"**{text}**"))
            return
    except ImportError:
        pass
    print(text)


def demo_corpus() -> Path:
    if not DEMO_CORPUS.is_file():
        raise FileNotFoundError(f"{DEMO_CORPUS} is missing: run `make corpus` first")
    return DEMO_CORPUS


def champion():
    """(registry, version folder, card, bundle) of the registry's current model ($XIAOBAO_REGISTRY or
    models/registry), or a clear error."""
    from models.registry import ModelLoadError, Registry, read_card
    from models.settings import ModelSettings

    registry = Registry.from_settings(ModelSettings.from_env())  # a notebook is an entry point
    try:
        folder = registry.resolve("current")
    except ModelLoadError:
        raise RuntimeError(f"no current model in registry {registry.root}: run `make train` first") from None
    return registry, folder, read_card(folder), registry.load(folder.name)


def charts() -> str | None:
    """Inline figures with a Chinese font (the digest's choice: service.digest.charts.cjk_font)."""
    from service.digest.charts import cjk_font  # importing it selects the Agg backend

    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            shell.run_line_magic("matplotlib", "inline")
    except ImportError:
        pass
    family = cjk_font()
    if family is None:
        note("no Chinese font found (apt-get install fonts-wqy-microhei): Chinese labels show as boxes")
    return family
