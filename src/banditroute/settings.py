"""One typed settings object for the worker, the client and the CLI.

Every setting reads an environment variable named ``BANDITROUTE_<FIELD>`` (upper case); policy, models, rules
and scenarios are data files under ``config/`` (see :mod:`banditroute.config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DECIDE_COMMIT_INTERVAL_MS = 50
"""The worker's default hold on acknowledged steps before the decide loop commits them (``decide_commit_interval_ms``;
chosen by measurement: docs/benchmarks.md, "commit21")."""
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]
"""A ``compression_type`` of aiokafka's producer, or ``none``."""
DECISIONS_COMPRESSION: Compression = "snappy"
"""The worker's default compression of the decide loop's record batches (``decisions_compression``)."""
DECIDE_FETCH_LINGER_MS = 5.0
"""The worker's default wait at the broker for more requests while they arrive faster than one per linger
(``decide_fetch_linger_ms``; chosen by measurement: docs/benchmarks.md, "lead30")."""


class Settings(BaseSettings):
    """Runtime settings. Defaults are safe for one machine: everything binds to 127.0.0.1."""

    model_config = SettingsConfigDict(env_prefix="BANDITROUTE_", extra="ignore", frozen=True)

    # -- Kafka connection ------------------------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when the protocol is SASL_*."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle for SSL/SASL_SSL.")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS.")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client key for mutual TLS.")

    # -- Topics ------------------------------------------------------------------------------------------
    topic_prefix: str = Field(
        "banditroute", description="Prefix of every topic name: '<prefix>.requests', ..."
    )
    partitions: int = Field(
        4, ge=1, le=1024, description="Partitions of the requests/decisions/feedback topics."
    )
    state_partitions: int = Field(
        4, ge=1, le=1024, description="Partitions of the outcomes and state topics."
    )

    # -- Worker --------------------------------------------------------------------------------------------
    app_id: str = Field("banditroute-router", description="faust app id; also the consumer group prefix.")
    worker_id: str | None = Field(
        None, description="Name of this worker in decisions and logs (default host:pid)."
    )
    config_dir: Path = Field(
        Path("config"), description="Folder with policy.yaml, models.yaml and rules.yaml."
    )
    data_dir: Path = Field(Path(".banditroute/worker"), description="faust data folder (local table stores).")
    max_payload_bytes: int = Field(
        65_536, ge=256, le=1_048_576, description="Larger events are dead-lettered."
    )
    snapshot_interval_ms: int = Field(50, ge=0, le=60_000, description="Least time between state snapshots.")
    decide_commit_interval_ms: int = Field(
        DECIDE_COMMIT_INTERVAL_MS,
        ge=0,
        le=1_000,
        description=(
            "How long the decide loop holds acknowledged steps to commit their request offsets together "
            "(an assignment, a stop and a failed send commit at once; held steps also wait for the round being "
            "acknowledged). Decisions are handed to the join with the commit that covers them; a crash re-decides "
            "what was decided since the last commit. 0: a commit per round of acknowledged steps."
        ),
    )
    decide_fetch_linger_ms: float = Field(
        DECIDE_FETCH_LINGER_MS,
        ge=0,
        le=50,
        description=(
            "While requests arrive faster than one per this many ms, the decide loop's fetches wait this long "
            "at the broker for more (fewer, larger steps: less CPU per request at paced rates, up to this much "
            "more latency there). Sparse and idle streams are fetched as before. 0: never wait."
        ),
    )
    decisions_compression: Compression = Field(
        DECISIONS_COMPRESSION,
        description=(
            "Compression of the record batches the decide loop writes (decisions, replies, dead letters). A "
            "decision is ~800 bytes of JSON; in a batch snappy makes it ~140, zstd ~65. Every consumer of the "
            "decisions topic needs the codec (the Python client has it)."
        ),
    )
    session_timeout_s: float = Field(
        10.0,
        ge=3.0,
        le=300.0,
        description="Consumer group session timeout: how soon a dead worker's partitions move.",
    )
    seed: int | None = Field(None, description="Seed of the sampler (default: random per worker).")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["json", "text"] = Field("json", description="Structured JSON logs or plain text.")

    # -- Web (metrics, dashboard) -------------------------------------------------------------------------
    web_enabled: bool = Field(True, description="Serve /metrics, the JSON API and the dashboard.")
    web_host: str = Field("127.0.0.1", description="Bind address of the web server (localhost by default).")
    web_port: int = Field(6066, ge=0, le=65535, description="Port of the web server (0 picks a free one).")

    @property
    def broker_url(self) -> str:
        return ",".join(f"kafka://{h.strip()}" for h in self.kafka_bootstrap.split(","))

    def topic(self, name: str) -> str:
        """Full topic name for a logical name such as ``requests``."""
        return f"{self.topic_prefix}.{name}"

    def aiokafka_security(self) -> dict[str, object]:
        """Keyword arguments for aiokafka clients (producer, consumer, admin)."""
        kwargs: dict[str, object] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.kafka_sasl_mechanism or "SCRAM-SHA-256"
            kwargs["sasl_plain_username"] = self.kafka_sasl_username
            kwargs["sasl_plain_password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            )
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            import ssl

            # what aiokafka.helpers.create_ssl_context does: verify the broker (hostname included) against
            # the CA file or the system's CAs, and present a client certificate when one is configured
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None
            )
            if self.kafka_ssl_certfile:
                context.load_cert_chain(
                    str(self.kafka_ssl_certfile),
                    str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
                )
            kwargs["ssl_context"] = context
        return kwargs
