"""Every setting of the service in one object, read from XIAOBAO_* environment variables.

`Settings()` reads the environment; tests and the CLI pass overrides as keyword arguments. The model
side's folders (registry, encoder, embedding cache) are `models.settings.ModelSettings`, read from the
environment when the Settings are made and answered by `Settings.models` (an explicit `registry` wins).
List settings accept JSON (`["a","b"]`) or a comma-separated string (`a,b`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, PrivateAttr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.settings import ModelSettings
from service.digest_schedule import parse_schedule
from service.vocab import RiskLevel

# The intake channels, categories and causes the project uses (../shared/domain.md); configuration,
# not code, so a bank with other lists changes the environment, not the service.
DEFAULT_CHANNELS = ["营业网点", "电话客服", "手机银行", "网上银行", "微信公众号", "监管转办", "信访", "媒体"]
DEFAULT_CATEGORIES = ["信用卡", "借记卡", "个人贷款", "人民币储蓄", "支付结算", "自营理财", "银行代理业务",
                      "个人金融信息", "人民币管理", "外汇", "其他"]
DEFAULT_CAUSES = ["服务态度及服务质量", "服务设施、设备、业务系统", "管理制度、业务规则与流程", "营销方式和手段",
                  "信息披露", "自主选择权", "定价收费", "产品收益", "合同条款", "消费者资金安全", "消费者信息安全",
                  "债务催收方式和手段"]

StrList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="XIAOBAO_", extra="ignore", populate_by_name=True)

    # --- storage and model ------------------------------------------------------------------------
    database_url: str = Field(
        default="sqlite:///var/xiaobao.db",
        validation_alias=AliasChoices("XIAOBAO_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="SQLAlchemy URL; postgresql:// is served by psycopg 3. Relative SQLite paths are "
                    "relative to the working directory.")
    registry: Path | None = Field(default=None, description="model registry folder (XIAOBAO_REGISTRY, the "
                                  "models' own variable; default: models/registry); see `models`")
    migrate_on_start: bool = True

    # --- request limits -----------------------------------------------------------------------------
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    max_text_chars: int = Field(default=20_000, gt=0)
    predict_batch_max: int = Field(default=1000, gt=0)
    intake_batch_max: int = Field(default=500, gt=0)
    page_limit_default: int = Field(default=50, gt=0)
    page_limit_max: int = Field(default=500, gt=0)
    rate_limit_per_second: float = Field(default=50, ge=0, description="requests a second per API key and "
                                         "worker process (token bucket; 0 turns it off)")
    rate_limit_burst: int = Field(default=100, ge=1, description="requests a key may make at once")

    # --- vocabularies -------------------------------------------------------------------------------
    channels: StrList = Field(default_factory=lambda: list(DEFAULT_CHANNELS))
    categories: StrList = Field(default_factory=lambda: list(DEFAULT_CATEGORIES),
                                description="labels an outcome may correct a category to")
    causes: StrList = Field(default_factory=lambda: list(DEFAULT_CAUSES),
                            description="labels an outcome may correct a cause to")
    timezone: str = Field(default="Asia/Shanghai",
                          description="zone of timestamps sent without an offset, and of exported times")

    # --- alerting (service.alerting, called by service.intake.Intake) -----------------------------
    alert_min_level: RiskLevel = RiskLevel.HIGH
    alert_channels: StrList = Field(default_factory=lambda: ["监管转办"],
                                    description="channels whose every request raises an alert")
    dedup_window_days: int = Field(default=30, ge=0)
    group_window_minutes: int = Field(default=60, ge=0, description="0 sends each alert in its own letter")
    routing_file: Path | None = Field(default=None, description="routing YAML (default: the shipped "
                                      "service/resources/routing.yaml)")
    protection_department: str = "消费者权益保护部"

    # --- letters: deadlines and escalation --------------------------------------------------------
    response_days: int = Field(default=15, ge=1, description="days to decide on a request (extendable to 30/60)")
    ack_working_days: int = Field(default=2, ge=0, description="working days a department has to acknowledge")
    reminder_interval_hours: float = Field(default=24, gt=0, description="between reminders of an overdue letter")
    public_url: str = Field(default="http://127.0.0.1:8000", description="base of links in letters and messages")

    # --- delivery: outbox worker, SMTP, webhooks (also used by anything else that sends mail) -----
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, gt=0, lt=65536)
    smtp_sender: str = "xiaobao@bank.example"
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    mail_dir: Path | None = Field(default=None, description="write mail as .eml files here instead of SMTP "
                                  "(a trial without a mail server; `make run` uses var/mail)")
    send_timeout_seconds: float = Field(default=10, gt=0, description="SMTP and webhook network timeout")
    outbox_max_attempts: int = Field(default=8, ge=1, description="failed attempts before a message is dead")
    outbox_backoff_seconds: float = Field(default=30, gt=0, description="first retry delay; doubles each time")
    outbox_backoff_max_seconds: float = Field(default=3600, gt=0)
    outbox_lease_seconds: float = Field(default=120, gt=0, description="a claimed message is another "
                                        "worker's to retry once its lease runs out (a crashed worker)")
    outbox_batch_size: int = Field(default=20, ge=1)
    worker_poll_seconds: float = Field(default=2, gt=0)
    run_worker: bool = Field(default=False, description="`xiaobao serve` also runs the delivery worker")

    # --- weekly digest (service.digest; the worker sends it) -------------------------------------
    digest_schedule: str = Field(default="MON 08:00", description="weekday and local time the worker sends "
                                 "the last complete week's 投诉处理周报, e.g. 'MON 08:00'; 'off' disables")
    digest_recipients: StrList = Field(default_factory=list, description="digest addresses (default: the "
                                       "protection department's e-mail in the routing file)")

    # --- console (service.web): browser sessions ------------------------------------------------
    console_session_hours: float = Field(default=8, gt=0, description="a console sign-in lasts at most this long")
    console_idle_minutes: float = Field(default=30, gt=0, description="a console session unused this long ends")

    log_level: str = "INFO"

    # Read once, with the rest of the environment, when the Settings are made (models.settings).
    _model_env: ModelSettings = PrivateAttr(default_factory=ModelSettings.from_env)

    @property
    def models(self) -> ModelSettings:
        """The registry, encoder and embedding-cache folders the service loads models with."""
        env = self._model_env
        return env if self.registry is None else env.but(registry=self.registry)

    @field_validator("channels", "categories", "causes", "alert_channels", "digest_recipients", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("channels", "categories", "causes")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one value")
        return value

    @field_validator("digest_schedule")
    @classmethod
    def _known_schedule(cls, value: str) -> str:
        parse_schedule(value)  # raises ValueError with the reason
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
