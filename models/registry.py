"""Where trained versions live, which one is the champion, and how a version is loaded safely.

Layout: <root>/versions/<id>/{bundle.joblib, card.json, validation.parquet, trained_on.txt} (plus the fine-tuned
weights, e.g. finetune.safetensors, for a finetune bundle), and <root>/state.json holding the current
version and the earlier champions (for rollback). Loading checks the card's sha256 of every file and
library versions before unpickling, so a corrupt, truncated or incompatible bundle is refused with a
sentence, never a pickle traceback.

A `Registry` is given its folder and the model settings (`models.settings`) its bundles load with:
the encoder folder where a moved base encoder is looked for, and the embedding cache. Entry points
build it with `Registry.from_settings(ModelSettings.from_env())`; nothing here reads the environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib

from models.bundle import FORMAT_VERSION, ModelBundle
from models.errors import ModelLoadError
from models.hashing import sha256_file, text_fingerprint
from models.settings import ModelSettings, current, in_scope

BUNDLE_FILE = "bundle.joblib"
CARD_FILE = "card.json"
VALIDATION_FILE = "validation.parquet"
TRAINED_ON_FILE = "trained_on.txt"  # fingerprints of the training rows' texts, so promotion compares fairly


def library_versions() -> dict[str, str]:
    import numpy
    import scipy
    import sklearn

    return {"python": platform.python_version(), "numpy": numpy.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__, "joblib": joblib.__version__}


def _major_minor(v: str, parts: int) -> str:
    return ".".join(v.split(".")[:parts])


# What must agree between the training and the loading environment for a pickle to be trusted.
_COMPAT_PARTS = {"python": 2, "numpy": 1, "scipy": 1, "scikit-learn": 2}


def incompatibilities(recorded: dict[str, str]) -> list[str]:
    here = library_versions()
    problems = []
    for lib, parts in _COMPAT_PARTS.items():
        want = recorded.get(lib)
        if want is None:
            problems.append(f"{lib} version not recorded")
        elif _major_minor(want, parts) != _major_minor(here[lib], parts):
            problems.append(f"{lib} {want} (trained) vs {here[lib]} (here)")
    return problems



def read_card(folder: Path) -> dict[str, Any]:
    path = folder / CARD_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{folder}: no {CARD_FILE}; not a model version folder") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: unreadable model card ({exc})") from None


def load_bundle_dir(folder: Path | str, settings: ModelSettings | None = None) -> ModelBundle:
    """Load and verify the bundle in a version folder; an encoder it references is restored with
    `settings` (default: those in scope)."""
    folder = Path(folder)
    settings = settings or current()
    card = read_card(folder)
    path = folder / BUNDLE_FILE
    if not path.is_file():
        raise ModelLoadError(f"{folder}: {BUNDLE_FILE} is missing")
    if card.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(f"{folder}: bundle format {card.get('format_version')} is not the supported "
                             f"format {FORMAT_VERSION}; retrain it with this version")
    size = path.stat().st_size
    if card.get("bundle_bytes") is not None and size != card["bundle_bytes"]:
        raise ModelLoadError(f"{path}: {size} bytes where the card records {card['bundle_bytes']}; "
                             "the file is truncated or was replaced")
    if sha256_file(path) != card.get("bundle_sha256"):
        raise ModelLoadError(f"{path}: sha256 does not match the model card; the bundle is corrupt")
    problems = incompatibilities(card.get("library_versions", {}))
    if problems:
        raise ModelLoadError(f"{folder}: trained with incompatible libraries: {'; '.join(problems)}")
    verified = _verify_weight_files(folder, card)
    try:
        with in_scope(settings):  # unpickling cannot take arguments: the Encoder reads them from the scope
            bundle = joblib.load(path)
    except ModelLoadError:  # e.g. the encoder a bundle references is not here: its own sentence
        raise
    except Exception as exc:  # unpickling failures come in many types; all mean "unusable"
        raise ModelLoadError(f"{path}: cannot be read ({type(exc).__name__})") from None
    if not isinstance(bundle, ModelBundle) or bundle.format_version != FORMAT_VERSION:
        raise ModelLoadError(f"{path}: does not hold a model bundle of format {FORMAT_VERSION}")
    unverified = [name for name in bundle.weight_files() if name not in verified]
    if unverified:
        raise ModelLoadError(f"{folder}: the card records no sha256 for {', '.join(unverified)}; not trusted")
    try:
        bundle.load_weight_files(folder)
    except ModelLoadError:
        raise
    except Exception as exc:  # torch / safetensors failures: the weights cannot serve
        raise ModelLoadError(f"{folder}: the fine-tuned weights cannot be loaded ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    bundle.meta["version"] = card.get("version", folder.name)
    return bundle


def _verify_weight_files(folder: Path, card: dict[str, Any]) -> set[str]:
    """Size and sha256 of each weights file the card lists (fine-tuned encoder weights)."""
    files = card.get("weight_files") or {}
    for name, want in files.items():
        path = folder / name
        if Path(name).name != name or not path.is_file():
            raise ModelLoadError(f"{folder}: {name} is missing")
        if path.stat().st_size != want.get("bytes"):
            raise ModelLoadError(f"{path}: {path.stat().st_size} bytes where the card records {want.get('bytes')}; "
                                 "the file is truncated or was replaced")
        if sha256_file(path) != want.get("sha256"):
            raise ModelLoadError(f"{path}: sha256 does not match the model card; the weights are corrupt")
    return set(files)


def smoke_test(bundle: ModelBundle) -> None:
    """One real prediction in Chinese and one in English; raises ModelLoadError if either fails."""
    try:
        out = bundle.predict(["信用卡被盗刷了，要求退款", "my card was charged twice"], explain=True)
    except Exception as exc:
        raise ModelLoadError(f"model {bundle.version} fails a test prediction ({type(exc).__name__}: {exc})") from None
    for name in bundle.head_names:
        if name not in out[0]:
            raise ModelLoadError(f"model {bundle.version} returned no {name} prediction")


@dataclass
class Registry:
    """The registry in folder `root`. `settings` are the encoder and embedding-cache folders its bundles
    load with and training with it uses (their `registry` is not consulted: `root` is the folder);
    default: the settings in scope when it is made (`models.settings:current`)."""

    root: Path
    settings: ModelSettings = field(default_factory=current)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> Registry:
        """The registry the settings name, loading with those settings."""
        return cls(settings.registry, settings)

    # --- state ----------------------------------------------------------------------------------
    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    def state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"current": None, "history": []}
        except ValueError:
            raise ModelLoadError(f"{self.state_path}: unreadable registry state") from None

    @contextlib.contextmanager
    def locked(self):
        """Serialise state changes between processes (two promotes at once)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, ensure_ascii=False, indent=2), encoding="utf-8")
        os.replace(tmp, self.state_path)

    def current(self) -> str | None:
        return self.state().get("current")

    def set_current(self, version: str) -> str | None:
        """Make `version` the champion; the previous one goes on the rollback history."""
        self.folder(version)
        with self.locked():
            state = self.state()
            previous = state.get("current")
            if previous and previous != version:
                state["history"].append(previous)
            state["current"] = version
            self._write_state(state)
        return previous

    def rollback(self) -> tuple[str, str]:
        with self.locked():
            state = self.state()
            if not state.get("history"):
                raise ModelLoadError("no earlier champion to roll back to")
            bad, previous = state["current"], state["history"].pop()
            state["current"] = previous
            state.setdefault("rolled_back", []).append(bad)
            self._write_state(state)
        return bad, previous

    # --- versions -------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if (p / CARD_FILE).is_file())

    def resolve(self, ref: str) -> Path:
        """A bundle directory, 'current', or a version id (a unique prefix will do) → its folder."""
        path = Path(ref)
        if (path / CARD_FILE).is_file() or (path / BUNDLE_FILE).is_file():
            return path
        if ref == "current":
            cur = self.current()
            if not cur:
                raise ModelLoadError(f"no current model in registry {self.root}; run `make train` or "
                                     "`xiaobao train --promote`")
            return self.folder(cur)
        return self.folder(ref)

    def folder(self, version: str) -> Path:
        exact = self.versions_dir / version
        if (exact / CARD_FILE).is_file():
            return exact
        matches = [v for v in self.versions() if v.startswith(version)]
        if len(matches) == 1:
            return self.versions_dir / matches[0]
        if len(matches) > 1:
            raise ModelLoadError(f"model version {version!r} is ambiguous: {', '.join(matches)}")
        raise ModelLoadError(f"no model version {version!r} in registry {self.root}")

    def trained_on(self, ref: str) -> set[str] | None:
        """Fingerprints of the texts a version trained on; None for a version saved without them."""
        path = self.resolve(ref) / TRAINED_ON_FILE
        return set(path.read_text(encoding="ascii").split()) if path.is_file() else None

    def card(self, ref: str) -> dict[str, Any]:
        return read_card(self.resolve(ref))

    def load(self, ref: str = "current", verify: bool = True) -> ModelBundle:
        bundle = load_bundle_dir(self.resolve(ref), self.settings)
        if verify:
            smoke_test(bundle)
        return bundle

    def save(self, bundle: ModelBundle, card: dict[str, Any], validation=None,
             trained_on: Iterable[str] | None = None, trained_on_prints: Iterable[str] | None = None) -> str:
        """Write a new version; returns its id. The card gets the bundle's hash and environment;
        `trained_on` (the training texts, as masked) is kept as fingerprints only; a version derived
        from another (recalibrated) passes its parent's fingerprints as `trained_on_prints`."""
        created = datetime.now(UTC)
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        version = created.strftime("%Y%m%d-%H%M%S")
        n = 0
        while (self.versions_dir / version).exists():
            n += 1
            version = f"{created.strftime('%Y%m%d-%H%M%S')}-{n}"
        tmp = self.versions_dir / f".{version}.tmp"
        tmp.mkdir()
        bundle.meta["version"] = version
        weights = bundle.save_weight_files(tmp)  # before the pickle, which records their sha256 too
        joblib.dump(bundle, tmp / BUNDLE_FILE, compress=3)
        if validation is not None:
            validation.to_parquet(tmp / VALIDATION_FILE, index=False)
        if trained_on is not None or trained_on_prints is not None:
            prints = sorted({text_fingerprint(t) for t in trained_on or ()} | set(trained_on_prints or ()))
            (tmp / TRAINED_ON_FILE).write_text("".join(f"{p}\n" for p in prints), encoding="ascii")
        card = {
            "version": version,
            "created_at": created.isoformat(timespec="seconds"),
            **card,
            "format_version": FORMAT_VERSION,
            "library_versions": library_versions(),
            "bundle_sha256": sha256_file(tmp / BUNDLE_FILE),
            "bundle_bytes": (tmp / BUNDLE_FILE).stat().st_size,
            **({"weight_files": {name: {"sha256": sha, "bytes": (tmp / name).stat().st_size}
                                 for name, sha in weights.items()}} if weights else {}),
            "python_executable": sys.executable,
        }
        (tmp / CARD_FILE).write_text(json.dumps(card, ensure_ascii=False, indent=2), encoding="utf-8")
        os.replace(tmp, self.versions_dir / version)
        return version
