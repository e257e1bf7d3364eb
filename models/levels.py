"""The risk levels a bundle assigns (`ModelBundle.risk_level`), highest first.

A module of its own, without numpy or scikit-learn, so that the service's settings, tables and API
schemas can use the levels without loading a model's dependencies.
"""

from __future__ import annotations

from enum import StrEnum


class RiskLevel(StrEnum):
    """How likely a request is to become a dispute: its calibrated score against the model's thresholds."""

    # StrEnum: members compare equal to their values, so stored strings and the enum mix freely.
    HIGH = "高"
    MEDIUM = "中"
    LOW = "低"


RISK_LEVELS: tuple[RiskLevel, ...] = tuple(RiskLevel)
# The levels that raise an alert; a level's alerts are the requests at or above it (中 counts 高 too).
ALERT_LEVELS: tuple[RiskLevel, ...] = RISK_LEVELS[:2]

__all__ = ["ALERT_LEVELS", "RISK_LEVELS", "RiskLevel"]
