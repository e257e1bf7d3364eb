"""Where the models side keeps its files: `ModelSettings`, read from the environment in one place.

| variable | default | what |
|---|---|---|
| `XIAOBAO_REGISTRY` | `models/registry` | the model registry (`models.registry.Registry`) |
| `XIAOBAO_ENCODER` | `models/encoder_e5` | the encoder checkpoint used when none is named, and where a bundle's encoder is looked for when it is no longer at its recorded path |
| `XIAOBAO_CACHE` | `var/embeddings` | the on-disk embedding cache (and the ONNX exports of read-only checkpoints) |

An empty variable counts as unset. Only entry points call `ModelSettings.from_env()` (the `xiaobao`
command, the service's `Settings`, bench scripts, notebooks); library code is given the settings.
`Registry` holds them and puts them `in_scope` while it unpickles a bundle, because an `Encoder`
restored by pickle cannot be handed arguments; an `Encoder` built without a path or cache folder
takes them from the settings in scope, else from the defaults above (never from the environment).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REGISTRY = ROOT / "models" / "registry"
DEFAULT_ENCODER_DIR = ROOT / "models" / "encoder_e5"
DEFAULT_CACHE_DIR = ROOT / "var" / "embeddings"


@dataclass(frozen=True)
class ModelSettings:
    registry: Path = DEFAULT_REGISTRY
    encoder: Path = DEFAULT_ENCODER_DIR
    cache: Path = DEFAULT_CACHE_DIR

    def __post_init__(self) -> None:
        for name in ("registry", "encoder", "cache"):
            object.__setattr__(self, name, Path(getattr(self, name)))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Path | str | None) -> ModelSettings:
        """XIAOBAO_REGISTRY, XIAOBAO_ENCODER and XIAOBAO_CACHE (the module docstring's table);
        an override that is not None wins over its variable."""
        env = os.environ if environ is None else environ
        found = {"registry": env.get("XIAOBAO_REGISTRY"), "encoder": env.get("XIAOBAO_ENCODER"),
                 "cache": env.get("XIAOBAO_CACHE")}
        unknown = set(overrides) - set(found)
        if unknown:
            raise TypeError(f"unknown model settings: {', '.join(sorted(unknown))}")
        found.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**{k: Path(v) for k, v in found.items() if v})

    def but(self, **changes: Path | str) -> ModelSettings:
        """A copy with these folders changed."""
        return replace(self, **{k: Path(v) for k, v in changes.items()})


_IN_SCOPE: ContextVar[ModelSettings | None] = ContextVar("xiaobao_model_settings", default=None)


@contextlib.contextmanager
def in_scope(settings: ModelSettings) -> Iterator[ModelSettings]:
    """Make `settings` the ones `current()` answers inside this block (this thread or task only)."""
    token = _IN_SCOPE.set(settings)
    try:
        yield settings
    finally:
        _IN_SCOPE.reset(token)


def current() -> ModelSettings:
    """The settings an entry point or a registry put in scope, else the built-in defaults."""
    return _IN_SCOPE.get() or ModelSettings()
