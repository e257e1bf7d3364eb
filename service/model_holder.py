"""The model the service is serving, and its replacement without a failed request.

A request takes `holder.get()` once and scores with that bundle to the end, so a reload that swaps
the reference mid-request changes nothing for it. A new bundle is verified (registry checks plus a
test prediction through the service's own schema) before the swap; a refused one leaves the old
model serving.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from models.bundle import ModelBundle
from models.registry import ModelLoadError, Registry

log = logging.getLogger("xiaobao.service.model")

_PROBE_TEXTS = ["客户反映信用卡账单多扣了一笔年费，多次致电客服无人处理，要求退还并称将向监管投诉。",
                "请问定期存款提前支取的利息怎么计算？"]


class ModelUnavailable(Exception):
    """No model is loaded; the message says why."""


class NoCurrentModel(ModelLoadError):
    """The registry names no champion."""


@dataclass(frozen=True)
class Served:
    bundle: ModelBundle
    version: str
    loaded_at: datetime


@dataclass(frozen=True)
class ReloadResult:
    previous: str | None
    version: str
    changed: bool


def verify(bundle: ModelBundle, channel: str | None = None) -> None:
    """A test prediction with fields and explanations, checked against the API's response schema."""
    from pydantic import ValidationError

    from service.schemas import Prediction

    fields = [{"channel": channel, "repeat_count": 1, "amount": 100.0}, {"channel": channel}]
    try:
        out = bundle.predict(_PROBE_TEXTS, fields, explain=True)
        for item in out:
            Prediction.model_validate(item)
    except ValidationError as exc:
        raise ModelLoadError(f"model {bundle.version} answers in a shape the API cannot serve: "
                             f"{str(exc).splitlines()[0]}") from None
    except Exception as exc:
        raise ModelLoadError(f"model {bundle.version} fails a test prediction "
                             f"({type(exc).__name__}: {exc})") from None
    if len(out) != len(_PROBE_TEXTS) or not any(h in out[0] for h in ("category", "cause", "risk")):
        raise ModelLoadError(f"model {bundle.version} returned no prediction head")


class ModelHolder:
    def __init__(self, registry: Registry, probe_channel: str | None = None) -> None:
        self.registry = registry
        self.probe_channel = probe_channel
        self._served: Served | None = None
        self.last_error: str | None = None
        self._reload_lock = threading.Lock()  # one reload at a time; readers never take it

    @property
    def served(self) -> Served | None:
        return self._served

    @property
    def version(self) -> str | None:
        served = self._served
        return served.version if served else None

    def get(self) -> ModelBundle:
        served = self._served
        if served is None:
            raise ModelUnavailable(self.last_error or "no model loaded")
        return served.bundle

    def reload(self) -> ReloadResult:
        """Load the registry's current version; raises ModelLoadError (NoCurrentModel when there is
        none) and keeps the model being served."""
        with self._reload_lock:
            previous = self.version
            try:
                if self.registry.current() is None:
                    raise NoCurrentModel(f"no current model in registry {self.registry.root}; run `make train` "
                                         "or `xiaobao train --promote`")
                bundle = self.registry.load("current", verify=True)
                verify(bundle, self.probe_channel)
            except ModelLoadError as exc:
                self.last_error = str(exc)
                log.warning("model not loaded: %s", exc)
                raise
            self._served = Served(bundle, bundle.version, datetime.now(UTC))  # the atomic swap
            self.last_error = None
            log.info("serving model %s (was %s)", bundle.version, previous)
            return ReloadResult(previous, bundle.version, previous != bundle.version)
