"""All configuration, in one object, validated once at start-up and then passed in.

Every variable is read from the environment or `.env` and documented in `.env.example` and the
README. Nothing else in the code reads the environment: services receive a `Settings` (or the piece
they need), so tests build one directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Region(StrEnum):
    AP_NORTHEAST = "ap-northeast"
    US_WEST = "us-west"


# The published endpoints per region (spec: "Regions and base URLs").
REGION_CONSOLE_URLS: dict[Region, str] = {
    r: f"https://console.{r.value}.spatialwalk.cloud/v1/console" for r in Region
}
REGION_INGRESS_URLS: dict[Region, str] = {
    r: f"wss://api.{r.value}.spatialwalk.cloud/v2/driveningress" for r in Region
}

PCM_SAMPLE_RATES: tuple[int, ...] = (8000, 16000, 22050, 24000, 32000, 44100, 48000)

EMULATOR_APP_ID = "emulator-app"
EMULATOR_AVATAR_ID = "emulator-avatar"
EMULATOR_API_KEY = "emulator-api-key"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one region's console and ingress live."""

    region: str
    console_url: str
    ingress_url: str


def _split_csv(value: object) -> object:
    """Lists come from the environment as comma-separated text (JSON is accepted too)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return value
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    # --- the server itself ---
    app_env: Literal["development", "test", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = Field(
        default=None,
        description="Base URL browsers use to reach this server (for relay WebSocket URLs).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    redis_url: str | None = None

    # --- SpatialReal upstream. No API key means: run against the built-in emulator. ---
    spatialreal_api_key: SecretStr | None = None
    spatialreal_app_id: str | None = None
    spatialreal_region: Region = Region.AP_NORTHEAST
    spatialreal_fallback_regions: Annotated[list[Region], NoDecode] = Field(
        default_factory=lambda: [Region.US_WEST]
    )
    spatialreal_console_url: str | None = None
    spatialreal_ingress_url: str | None = None
    spatialreal_console_urls: dict[Region, str] = Field(default_factory=dict)
    spatialreal_ingress_urls: dict[Region, str] = Field(default_factory=dict)
    upstream_connect_timeout: float = Field(default=5.0, gt=0)
    upstream_request_timeout: float = Field(default=10.0, gt=0)
    breaker_failure_threshold: int = Field(default=3, ge=1)
    breaker_cooldown_seconds: float = Field(default=30.0, gt=0)

    # --- avatars ---
    default_avatar_id: str | None = None
    avatar_allowlist: CsvList = Field(default_factory=list)

    # --- the emulator (used when no API key is configured, and by `avatar-relay emulator`) ---
    emulator_host: str = "127.0.0.1"
    emulator_port: int = Field(default=0, ge=0, le=65535)
    emulator_speed: float = Field(default=1.0, gt=0)

    # --- callers of our API ---
    auth_mode: Literal["none", "api-key", "jwt"] = "none"
    auth_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    cors_origins: CsvList = Field(default_factory=list)
    trusted_proxies: CsvList = Field(default_factory=list)
    rate_limit_principal_per_minute: int = Field(default=120, ge=0)
    rate_limit_ip_per_minute: int = Field(default=600, ge=0)

    # --- token broker ---
    token_ttl_default_seconds: int = Field(default=3600, ge=1)
    token_ttl_min_seconds: int = Field(default=60, ge=1)
    token_ttl_max_seconds: int = Field(default=86_400 - 60, ge=1, lt=86_400)
    token_pool_size: int = Field(default=0, ge=0)
    token_pool_min_remaining_seconds: int = Field(default=300, ge=0)
    idempotency_ttl_seconds: int = Field(default=600, ge=1)

    # --- relay ---
    ticket_ttl_seconds: int = Field(default=60, ge=1)
    resume_window_seconds: int = Field(default=30, ge=0)
    replay_buffer_messages: int = Field(default=4096, ge=16)
    replay_buffer_bytes: int = Field(default=16 * 1024 * 1024, ge=65_536)
    max_message_bytes: int = Field(default=256 * 1024, ge=1024)
    idle_timeout_seconds: float = Field(default=120.0, gt=0)
    max_session_seconds: float = Field(default=3600.0, gt=0)
    max_sessions_per_principal: int = Field(default=20, ge=1)
    max_sessions_global: int = Field(default=1000, ge=1)
    upstream_pool_size: int = Field(default=0, ge=0)
    default_sample_rate: int = 16000

    @field_validator(
        "spatialreal_fallback_regions",
        "avatar_allowlist",
        "auth_api_keys",
        "cors_origins",
        "trusted_proxies",
        mode="before",
    )
    @classmethod
    def _lists_from_csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("default_sample_rate")
    @classmethod
    def _supported_rate(cls, value: int) -> int:
        if value not in PCM_SAMPLE_RATES:
            raise ValueError(f"must be one of {', '.join(map(str, PCM_SAMPLE_RATES))}")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard_origin(cls, value: list[str]) -> list[str]:
        # Credentials (Authorization) are sent cross-origin, so `*` would let any page use them.
        if "*" in value:
            raise ValueError("'*' is not allowed; list the origins that may call the API")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: list[str] = []
        if self.app_env == "production":
            if self.spatialreal_api_key is None:
                problems.append("SPATIALREAL_API_KEY: required when APP_ENV=production")
            if not self.spatialreal_app_id:
                problems.append("SPATIALREAL_APP_ID: required when APP_ENV=production")
            if self.auth_mode == "none":
                problems.append("AUTH_MODE: 'none' is refused when APP_ENV=production")
        if self.spatialreal_api_key is not None and not self.spatialreal_app_id:
            problems.append("SPATIALREAL_APP_ID: required when SPATIALREAL_API_KEY is set")
        if self.spatialreal_api_key is not None and not self.default_avatar_id:
            # Without it every relay session that names no avatar would be refused (403).
            problems.append(
                "DEFAULT_AVATAR_ID: required when SPATIALREAL_API_KEY is set (the avatar relay"
                " sessions drive when the caller names none; its id is in SpatialReal Studio)"
            )
        if self.auth_mode == "api-key" and not self.auth_api_keys:
            problems.append("AUTH_API_KEYS: required when AUTH_MODE=api-key")
        if self.auth_mode == "jwt" and (self.jwt_secret is None) == (self.jwt_public_key is None):
            problems.append("JWT_SECRET / JWT_PUBLIC_KEY: set exactly one when AUTH_MODE=jwt")
        if (
            not self.token_ttl_min_seconds
            <= self.token_ttl_default_seconds
            <= (self.token_ttl_max_seconds)
        ):
            problems.append(
                "TOKEN_TTL_DEFAULT_SECONDS: must lie between TOKEN_TTL_MIN_SECONDS and"
                " TOKEN_TTL_MAX_SECONDS"
            )
        if self.spatialreal_region in self.spatialreal_fallback_regions:
            problems.append("SPATIALREAL_FALLBACK_REGIONS: must not repeat SPATIALREAL_REGION")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # --- derived views ---

    @property
    def emulator_mode(self) -> bool:
        """True when no SpatialReal credentials are set: the built-in emulator is upstream."""
        return self.spatialreal_api_key is None

    @property
    def upstream_api_key(self) -> SecretStr:
        """The key sent to the console: the configured one, or the emulator's well-known key."""
        return self.spatialreal_api_key or SecretStr(EMULATOR_API_KEY)

    @property
    def regions(self) -> list[Region]:
        return [self.spatialreal_region, *self.spatialreal_fallback_regions]

    def endpoints(self) -> list[Endpoint]:
        """Upstream endpoints in the order to try them: primary region first, then fallbacks."""
        out: list[Endpoint] = []
        for index, region in enumerate(self.regions):
            console = self.spatialreal_console_urls.get(region) or REGION_CONSOLE_URLS[region]
            ingress = self.spatialreal_ingress_urls.get(region) or REGION_INGRESS_URLS[region]
            if index == 0:
                console = self.spatialreal_console_url or console
                ingress = self.spatialreal_ingress_url or ingress
            out.append(Endpoint(region.value, console.rstrip("/"), ingress.rstrip("/")))
        return out

    @property
    def app_id(self) -> str:
        return self.spatialreal_app_id or EMULATOR_APP_ID

    @property
    def avatar_id(self) -> str:
        if self.default_avatar_id:
            return self.default_avatar_id
        return EMULATOR_AVATAR_ID if self.emulator_mode else ""

    def avatar_allowed(self, avatar_id: str) -> bool:
        """The default avatar and the allow-list; an empty allow-list admits only the default."""
        return bool(avatar_id) and (
            avatar_id == self.avatar_id or avatar_id in self.avatar_allowlist
        )


class ConfigError(Exception):
    """Configuration is invalid; `problems` holds one human-readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _describe(error: ValidationError) -> list[str]:
    lines: list[str] = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        if not location:
            # Model-level problems already name their variables, one per line.
            lines.extend(message.splitlines())
            continue
        lines.append(f"{location.upper()}: {message}")
    return lines


def load_settings(**overrides: object) -> Settings:
    """Read and validate configuration; raise ConfigError listing every problem at once."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None
