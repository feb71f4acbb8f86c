"""The one settings object. Nothing else in cinerec reads ``os.environ``."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SECRET_LENGTH = 32
_PLACEHOLDER_SECRETS = {"changeme", "secret", "change-me", "dev", "development", "jwt-secret"}


class Settings(BaseSettings):
    """cinerec configuration, from ``CINEREC_*`` environment variables or a ``.env`` file."""

    model_config = SettingsConfigDict(env_prefix="CINEREC_", env_file=".env", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    home: Path = Path("var")
    database_url: str = ""
    redis_url: str | None = None
    redis_prefix: str = "cinerec"  # every key and channel starts "<prefix>:"; replicas share one
    # Without Redis nothing is announced: a lone server can re-read the model aliases, accounts
    # and experiments this often instead, so that a CLI run's promotion reaches it (0: never;
    # `make demo` sets 10). Each re-read drops the process's cached accounts and generations.
    poll_without_redis_seconds: float = Field(default=0.0, ge=0)
    jwt_secret: str | None = None
    jwt_expiry_minutes: int = Field(default=60, gt=0)
    dataset: str = "ml-latest-small"
    dataset_base_url: str = "https://files.grouplens.org/datasets/movielens"
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:3000", "http://127.0.0.1:3000"]
    )
    auto_migrate: bool = True
    # None: on, except with CINEREC_ENV=production
    graphiql: bool | None = None
    introspection: bool | None = None
    max_query_depth: int = 10
    # introspection's own depth: 14 is what graphql's standard introspection query (GraphiQL's) needs
    max_introspection_depth: int = Field(default=14, gt=0)
    # parsed documents kept for the next request with the same text, by their estimated memory
    document_cache_bytes: int = Field(default=32 * 1024 * 1024, ge=0)
    max_aliases: int = 64
    max_tokens: int = 2000
    max_body_bytes: int = 256 * 1024
    max_page_size: int = 100
    max_query_cost: int = Field(default=5000, gt=0)
    # Cost-based rate limits: a bucket per caller (user, or client address when anonymous) of
    # `capacity` points refilled at `per_second`; every operation takes its cost (at least 1).
    rate_limits: bool = True
    rate_anonymous_capacity: int = Field(default=10_000, gt=0)
    rate_anonymous_per_second: float = Field(default=100.0, gt=0)
    rate_user_capacity: int = Field(default=20_000, gt=0)
    rate_user_per_second: float = Field(default=200.0, gt=0)
    rate_admin_capacity: int = Field(default=100_000, gt=0)
    rate_admin_per_second: float = Field(default=2_000.0, gt=0)
    request_timeout_seconds: float = Field(default=45.0, gt=0)
    # Persisted queries: "auto" (Apollo APQ: clients register hashes), "allowlist" (only the
    # manifest's operations run), "off".
    persisted_queries: Literal["auto", "allowlist", "off"] = "auto"
    persisted_queries_manifest: Path | None = None
    # registered persisted queries kept in Redis, least recently used out first beyond this
    persisted_queries_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    # Anonymous catalog responses: cached this long, and advertised so (Cache-Control max-age).
    response_cache_seconds: float = Field(default=10.0, ge=0)
    # A/B experiments: how long after an impression a rating of it counts as its outcome.
    experiment_window_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    # Drift (`cinerec monitor drift`): how often the server runs a check (0: never; a CronJob
    # may run it instead), the share of drifted columns that makes the data drift, the fewest
    # new ratings worth a check, and the most recent ones compared.
    drift_interval_seconds: int = Field(default=0, ge=0)
    # how often a replica reads the latest stored report into its drift gauges
    drift_refresh_seconds: float = Field(default=60.0, gt=0)
    # Log lines as text, or as one JSON object each (for a log pipeline); every GraphQL request
    # logs one line with its request id, operation, duration, user, cost and cache outcome.
    log_format: Literal["text", "json"] = "text"
    drift_share: float = Field(default=0.4, gt=0, le=1)
    drift_min_rows: int = Field(default=100, ge=1)
    drift_max_rows: int = Field(default=100_000, ge=1)
    shutdown_timeout_seconds: float = Field(default=20.0, gt=0)
    # Addresses (CIDRs) whose X-Forwarded-For is believed: the load balancer, nginx.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # /metrics: with a token, only `Authorization: Bearer <token>` reads it (required in production)
    metrics_token: str | None = None
    # Operation names labelled as themselves in metrics; any other name is counted as "other".
    metrics_operations: Annotated[list[str], NoDecode] = Field(default_factory=list)
    db_pool_size: int = 20
    mlflow_tracking_uri: str = ""
    wandb_api_key: str | None = None
    # false: no W&B run at all (MLflow still records every run); true without a key: offline runs
    wandb: bool = True
    max_recommendations: int = 100
    # searchMovies leaves out hits less alike than this (content cosine with the query text):
    # the ML-100K measurement behind 0.30 is in docs/benchmarks.md (benchmarks/search_floor.py)
    search_floor: float = 0.30
    cache_ttl_seconds: float = 300.0
    # the in-process cache level, bounded by memory (approx_size): a warmed movie row is about 1 KB
    cache_l1_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    cache_warm_movies: int = 100_000
    login_attempts: int = Field(default=5, gt=0)  # wrong passwords per account and address
    login_window_seconds: int = Field(default=300, gt=0)
    login_attempts_per_address: int = Field(default=50, gt=0)  # across all accounts
    register_attempts: int = Field(default=10, gt=0)  # new accounts per address per window
    register_window_seconds: int = Field(default=3600, gt=0)
    password_hash_threads: int = Field(default=1, gt=0)
    password_hash_queue: int = Field(default=32, gt=0)
    account_cache_seconds: float = Field(default=5.0, ge=0)
    # websockets: open sockets one account may hold, and how long one may sit with nothing
    # running and nothing said before it is closed
    ws_max_per_account: int = Field(default=16, gt=0)
    ws_idle_seconds: float = Field(default=300.0, gt=0)
    redis_timeout_seconds: float = Field(default=1.0, gt=0)
    # The LLM: which backend explains and reranks, and how hard it may be pushed.
    llm_backend: Literal["transformers", "ollama", "none"] = "transformers"
    llm_base: str = "smollm2-135m-instruct"  # the default base, or a local folder / hub id
    # true: with no tuned adapter registered the template writes (saying it waits for one)
    # instead of the untuned base model; `make demo` serves so while it fine-tunes in the background
    llm_adapter_required: bool = False
    llm_ollama_url: str = "http://127.0.0.1:11434"
    llm_ollama_base_tag: str = "smollm2:135m"  # the Ollama tag of the same base, for /api/create
    llm_ollama_keep_alive: str = "30m"
    llm_timeout_seconds: float = Field(default=30.0, gt=0)
    llm_max_new_tokens: int = Field(default=64, gt=0, le=512)
    llm_max_batch: int = Field(default=8, gt=0)
    # in-process decoding bans genre words a comparison would make false (ml/llm/constrain.py)
    llm_constrain_genres: bool = True
    # the in-process model's weights on the CPU (ml/llm/base_model.for_serving): bf16 where the
    # CPU has bfloat16 arithmetic (else float32); int8 is faster still but loses LLM share
    llm_quantize: Literal["none", "int8", "bf16"] = "bf16"
    # explanations one HTTP request may ask the LLM for: two batches of 8, which 2 cores write
    # in about 16 s, within the LLM timeout (docs/benchmarks.md: 7.85 s for 8); more is refused
    # before any work (QUERY_TOO_COMPLEX). The query cost (470 an explanation) bounds it too.
    llm_max_explanations: int = Field(default=16, ge=0)
    llm_max_pending: int = Field(default=32, gt=0)
    llm_batch_window_ms: float = Field(default=20.0, ge=0)
    llm_threads: int = 0  # torch threads for the in-process model; 0 keeps torch's default
    llm_rerank_candidates: int = Field(default=20, ge=0)
    llm_rerank_weight: float | None = None  # None: the weight validated with the served adapter
    llm_cache_dir: Path | None = None  # de-quantized base weights; default CINEREC_HOME/llm
    # the catalog's content embeddings as training encoded them; default CINEREC_HOME/embeddings
    embeddings_cache_dir: Path | None = None

    @field_validator("cors_origins", "trusted_proxies", "metrics_operations", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @model_validator(mode="after")
    def _defaults_and_secrets(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.home / 'cinerec.db'}"
        if self.llm_cache_dir is None:
            self.llm_cache_dir = self.home / "llm"
        if self.embeddings_cache_dir is None:
            self.embeddings_cache_dir = self.home / "embeddings"
        if not self.mlflow_tracking_uri:
            # MLflow 3 refuses its old plain-file store: a SQLite store under home instead.
            self.mlflow_tracking_uri = f"sqlite:///{self.home / 'mlflow.db'}"
        smallest = min(self.rate_anonymous_capacity, self.rate_user_capacity, self.rate_admin_capacity)
        if self.rate_limits and smallest < self.max_query_cost:
            raise ValueError(
                f"every rate-limit capacity must hold the largest allowed query: {smallest} < "
                f"CINEREC_MAX_QUERY_COST={self.max_query_cost}"
            )
        if self.persisted_queries == "allowlist" and self.persisted_queries_manifest is None:
            raise ValueError("CINEREC_PERSISTED_QUERIES=allowlist needs CINEREC_PERSISTED_QUERIES_MANIFEST")
        if self.env == "production":
            secret = self.jwt_secret or ""
            if len(secret) < MIN_SECRET_LENGTH or secret.lower() in _PLACEHOLDER_SECRETS:
                raise ValueError(
                    f"CINEREC_JWT_SECRET must be set to a random string of at least {MIN_SECRET_LENGTH} "
                    "characters when CINEREC_ENV=production"
                )
        return self

    def signing_secret(self) -> str:
        """The JWT secret: configured, or generated once and kept under ``home`` for local use."""
        if self.jwt_secret:
            return self.jwt_secret
        path = self.home / "jwt_secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        self.jwt_secret = path.read_text().strip()
        return self.jwt_secret

    @property
    def production(self) -> bool:
        return self.env == "production"

    def rate_limit(self, role: str | None) -> tuple[int, float]:
        """(bucket capacity, refill per second) for a role (None: anonymous)."""
        if role == "admin":
            return self.rate_admin_capacity, self.rate_admin_per_second
        if role == "user":
            return self.rate_user_capacity, self.rate_user_per_second
        return self.rate_anonymous_capacity, self.rate_anonymous_per_second

    @property
    def graphiql_enabled(self) -> bool:
        return self.graphiql if self.graphiql is not None else not self.production

    @property
    def introspection_enabled(self) -> bool:
        return self.introspection if self.introspection is not None else not self.production

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
