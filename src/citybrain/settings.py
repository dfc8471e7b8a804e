"""Settings from environment (prefix CITYBRAIN_) or CLI flags; read through `get_settings()`, never at import."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CITYBRAIN_", extra="ignore")

    home: Path = Field(Path(".citybrain"), description="Where embedded state lives (SQLite file, lake).")
    db: str = Field("", description="Operational store URL; empty means a SQLite file under `home`.")
    bus: str = Field("memory", description="'memory' (in-process) or nats://host:port (JetStream).")
    bus_stream: str = Field("CITYBRAIN", description="JetStream stream holding the events (one per City Brain).")
    host: str = "127.0.0.1"
    port: int = 8000
    district: str = Field("310115", description="Division code of the demo district loaded by `up`.")
    max_batch_entities: int = Field(1000, description="Largest entity batch one request may carry.")
    max_body_bytes: int = Field(16 * 1024 * 1024, description="Largest request body accepted.")
    cors_origins: str = Field(
        "", description="Web origins (scheme://host[:port]) allowed to call the API from a browser, separated by "
                        "commas; empty = none (the cockpit is served from the API's own origin).")
    store_concurrency: int = Field(8, ge=1, le=256, description=(
        "Store transactions one server process runs at once, and so its pooled connections. About four "
        "per core: more only makes threads and database backends take turns."))
    page_limit_max: int = 1000
    webhook_timeout_s: float = 5.0
    webhook_max_attempts: int = 8
    command_ack_timeout_s: float = 60.0
    system_health_interval_s: float = 30.0
    system_heartbeat_timeout_s: float = Field(
        90.0, description="A system that sent no heartbeat (nor passed a health check) for this long is down.")
    webhook_batch_size: int = Field(100, description="Most entities one notification POST carries.")
    retry_backoff_base_s: float = Field(1.0, description="First retry delay of webhooks and commands (doubles).")
    retry_backoff_max_s: float = Field(300.0, description="Longest retry delay of webhooks and commands.")
    command_max_attempts: int = Field(5, description="Delivery attempts before a pushed command fails.")
    background_poll_interval_s: float = Field(
        1.0, description="How often delivery, dispatch and health loops look for due work when not woken.")
    delivery_lease_s: float = Field(
        120.0, description="How long a worker owns claimed notifications/commands before others may retry them.")
    subscription_cache_refresh_s: float = Field(
        60.0, description="Backstop reload of the in-memory subscription cache (changes also reload it).")
    notification_retention_days: float = Field(7.0, description="Delivered notifications are kept this long.")

    mqtt: str = Field("", description="MQTT broker to take telemetry from (mqtt://host:1883); empty = HTTP only.")
    mqtt_qos: int = Field(1, ge=0, le=1, description="QoS of the telemetry subscription.")
    mqtt_client_id: str = Field(
        "", description="Stable MQTT client id of this ingest worker (the broker keeps its QoS 1 session under it); "
                        "default citybrain-ingest-{district}. Give each worker its own.")
    mqtt_share_group: str = Field("", description="MQTT 5 shared-subscription group, so N ingest workers split the load.")
    lake: str = Field("", description="Telemetry lake: empty = Parquet under `home`/lake; postgresql://… to scale out.")
    sensing_tick_s: float = Field(1.0, gt=0, description="How often silence rules and lake flushes run.")
    lake_flush_s: float = Field(5.0, gt=0, description="Most seconds an accepted reading waits to become queryable.")
    lake_commit_s: float = Field(0.02, ge=0, description="Most seconds a QoS 1 acknowledgement or an HTTP reply waits for the lake flush that makes its readings durable; one flush (one fsync) serves everything that arrived meanwhile.")
    sensing_shards: int = Field(1, ge=1, le=1024, description="Ingest workers the devices are split over (by town); see docs/sensing.md.")
    sensing_shard: int = Field(0, ge=0, description="The shard this ingest worker owns, 0 … sensing_shards - 1.")
    telemetry_nats: str = Field("", description="NATS JetStream to take sharded telemetry from (nats://host:4222), as `citybrain sensing relay` puts it there; instead of MQTT.")
    telemetry_stream: str = Field("CITYBRAIN_TELEMETRY", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="JetStream stream of the sharded telemetry; subjects telemetry.{stream}.{shard}.")
    vitals_interval_s: float = Field(60.0, gt=0, description="How often vital signs are computed and stored.")
    open311_jurisdiction: str = Field("", description="Open311 jurisdiction_id accepted besides the district codes.")
    open311_api_keys: str = Field(
        "", description="Open311 API keys that may file requests, as key=owner pairs separated by commas (a key "
                        "without =owner is its own owner). Empty: nobody may post.")
    supervision_interval_s: float = Field(3600.0, gt=0, description="How often recurring problems are looked for.")
    recurring_window_days: float = Field(30.0, gt=0, description="The window a recurring problem is counted in.")
    recurring_min_cases: int = Field(5, ge=2, description="Cases of one type in one place that make a recurring problem.")
    quality_interval_s: float = Field(60.0, gt=0, description="How often data-quality rules are scored (and "
                                      "what entity writes were checked is stored).")
    auth_required: bool = Field(
        True, description="Refuse requests without credentials (401) except on the open paths (health, "
                          "signing in, the API's description, Open311). Off makes an open installation for "
                          "development: anonymous callers are answered unrestricted (personal data still "
                          "masked); signed-in callers are held to their roles and scope either way.")
    secret_key: SecretStr = Field(SecretStr(""), description="Key that signs bearer tokens (32+ characters); "
                                  "empty = CITYBRAIN_SECRET_KEY_FILE, else `home`/secret.key, made on first use.")
    secret_key_file: str = Field("", description="File holding the token signing key (e.g. a mounted secret).")
    token_lifetime_s: float = Field(3600.0, gt=0, le=86400, description="How long a bearer token is valid.")
    rate_limit_per_s: float = Field(100.0, ge=0, description="Requests per second one user or API key may send "
                                    "to one server process (0 = no limit); anonymous callers are not limited.")
    rate_limit_burst: float = Field(200.0, ge=1, description="Requests a user or key may send at once before the "
                                    "rate applies.")
    auth_cache_s: float = Field(5.0, ge=0, description="How long a process trusts what it read of a user or key "
                                "(a disabled user or revoked key is refused within this).")
    pii_hash_key: SecretStr = Field(
        SecretStr(""), description="HMAC key of `hash` masking of personal data (same key → same tags, so "
                                   "cases of one caller link); empty = a fixed development key, not secret.")

    traffic_scenario: str = Field(
        "", description="Run a live traffic twin of this scenario (a RESCO map, a folder name under "
                        "`home`/traffic/scenarios, or a folder path); empty = no live twin.")
    traffic_org_unit: str = Field("", description="Org unit (town code) the live twin's roads belong to.")
    traffic_controller: str = Field("fixed", description="Signal controller the live twin starts with.")
    traffic_speedup: float = Field(10.0, gt=0, description="Simulated seconds per wall-clock second of the live twin.")
    traffic_report_s: float = Field(30.0, gt=0, description="Simulated seconds between two reports of the live twin.")
    traffic_origin: str = Field(
        "120.1170,30.2830", description="lon,lat where a network without georeference is placed (its centre); "
                                        "default: 古荡街道 Gudang, Xihu, where the Hangzhou 4x4 data was recorded.")

    @model_validator(mode="after")
    def _shard_in_range(self) -> Settings:
        if self.sensing_shard >= self.sensing_shards:
            raise ValueError(f"sensing_shard {self.sensing_shard} is not below sensing_shards {self.sensing_shards}")
        return self

    def open311_keys(self) -> dict[str, str]:
        """Open311 API key → owner."""
        keys = {}
        for part in self.open311_api_keys.split(","):
            key, _, owner = part.strip().partition("=")
            if key:
                keys[key] = owner or key[:6]
        return keys

    def allowed_origins(self) -> list[str]:
        return [origin.strip().rstrip("/") for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def database_url_shown(self) -> str:
        """The store URL as it may appear in output and logs: any password replaced by ***."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.database_url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: show nothing of it
            return "(the configured store)"

    def scrub(self, text: str) -> str:
        """`text` (an error message, say) with the store's password, if it has one, replaced by ***."""
        from urllib.parse import unquote, urlsplit

        password = urlsplit(self.database_url).password
        for secret in {password, unquote(password)} if password else ():
            text = text.replace(secret, "***")
        return text

    @property
    def database_url(self) -> str:
        return normalize_db_url(self.db) if self.db else f"sqlite:///{(self.home / 'citybrain.db').as_posix()}"


def normalize_db_url(url: str) -> str:
    """Accept the URLs operators type (`postgresql://…`, a bare file path) and pick our drivers."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if "://" not in url:
        return f"sqlite:///{url}"
    return url


@lru_cache
def get_settings() -> Settings:
    return Settings()
