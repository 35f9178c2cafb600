"""All configuration, in one object, validated once at start-up and then passed in.

Every variable is read from the environment or `.env` and documented in `.env.example` and the
README. Nothing else in the code reads the environment: services receive a `Settings` (or the piece
they need), so tests build one directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Region(StrEnum):
    """Every region name a provider preset knows (each provider has its own subset)."""

    AP_NORTHEAST = "ap-northeast"
    US_WEST = "us-west"
    CN_BEIJING = "cn-beijing"


class Provider(StrEnum):
    """Which flavour of the service, and so which hosts and token API, the presets describe."""

    SPATIALREAL = "spatialreal"  # today's service, as `spatialreal` 0.2.2 (October 2026) sees it
    SPATIALWALK = "spatialwalk"  # the legacy hosts of the March 2026 docs (`avatarkit` 0.1.7)
    SPATIUS = "spatius"  # the second product line (`spatius` 1.1.1)


class TokenApi(StrEnum):
    """How a session token is minted."""

    AUTH = "auth"  # POST {api root}/v1/auth/session-token, answer {"session_token"}
    CONSOLE = "console"  # POST {console}/session-tokens, answer {"sessionToken"}


@dataclass(frozen=True, slots=True)
class ProviderPreset:
    """A provider's published endpoints. `{region}` and `{domain}` are filled per region."""

    regions: tuple[Region, ...]
    default_region: Region
    token_api: TokenApi
    console_template: str
    ingress_template: str
    # Regions whose hosts live under another domain (spatius: `cn-*` on spatialwalk.top).
    domain: str = ""
    cn_domain: str = ""

    def console_url(self, region: Region) -> str:
        return self._fill(self.console_template, region)

    def ingress_url(self, region: Region) -> str:
        return self._fill(self.ingress_template, region)

    def _fill(self, template: str, region: Region) -> str:
        domain = self.cn_domain if region.value.startswith("cn-") else self.domain
        return template.format(region=region.value, domain=domain)


# The built-in presets (the SDKs' own, see ../shared/spec/upstream-2026-10.md). `spatialreal`
# resolves its hosts from a config service at run time and ships these as the fallback; we use
# the presets only. A new account uses `spatialreal`.
PROVIDERS: dict[Provider, ProviderPreset] = {
    Provider.SPATIALREAL: ProviderPreset(
        regions=(Region.US_WEST,),
        default_region=Region.US_WEST,
        token_api=TokenApi.AUTH,
        # One API root for every region; the ingress is per region.
        console_template="https://api.spatialreal.cloud",
        ingress_template="https://driven.{region}.spatialreal.cloud/v2/driveningress",
    ),
    Provider.SPATIALWALK: ProviderPreset(
        regions=(Region.AP_NORTHEAST, Region.US_WEST),
        default_region=Region.AP_NORTHEAST,
        token_api=TokenApi.CONSOLE,
        console_template="https://console.{region}.spatialwalk.cloud/v1/console",
        ingress_template="wss://api.{region}.spatialwalk.cloud/v2/driveningress",
    ),
    Provider.SPATIUS: ProviderPreset(
        regions=(Region.US_WEST, Region.AP_NORTHEAST, Region.CN_BEIJING),
        default_region=Region.US_WEST,
        token_api=TokenApi.CONSOLE,
        console_template="https://console.{region}.{domain}/v1/console",
        ingress_template="wss://api.{region}.{domain}/v2/driveningress",
        domain="spatius.ai",
        cn_domain="spatialwalk.top",
    ),
}

LIVEKIT_URL_SCHEMES: tuple[str, ...] = ("wss", "ws", "https", "http")

PCM_SAMPLE_RATES: tuple[int, ...] = (8000, 16000, 22050, 24000, 32000, 44100, 48000)

EMULATOR_APP_ID = "emulator-app"
EMULATOR_AVATAR_ID = "emulator-avatar"
EMULATOR_API_KEY = "emulator-api-key"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one region's console and ingress live, and which token API its console speaks."""

    region: str
    console_url: str
    ingress_url: str
    token_api: TokenApi = TokenApi.CONSOLE


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
    spatialreal_provider: Provider = Provider.SPATIALREAL
    # None: the provider's default region and fallbacks.
    spatialreal_region: Region | None = None
    spatialreal_fallback_regions: Annotated[list[Region] | None, NoDecode] = None
    spatialreal_console_url: str | None = None
    spatialreal_ingress_url: str | None = None
    spatialreal_console_urls: dict[Region, str] = Field(default_factory=dict)
    spatialreal_ingress_urls: dict[Region, str] = Field(default_factory=dict)
    # None: the provider's token API.
    spatialreal_token_api: TokenApi | None = None
    upstream_connect_timeout: float = Field(default=5.0, gt=0)
    upstream_request_timeout: float = Field(default=10.0, gt=0)
    breaker_failure_threshold: int = Field(default=3, ge=1)
    breaker_cooldown_seconds: float = Field(default=30.0, gt=0)
    # How long callers wait for a half-open breaker's probe before giving up on the region.
    breaker_probe_wait_seconds: float = Field(default=5.0, ge=0)
    # Relay reconnects upstream after a retryable loss: jittered exponential backoff between these.
    upstream_backoff_initial_seconds: float = Field(default=0.5, gt=0)
    upstream_backoff_max_seconds: float = Field(default=30.0, gt=0)

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
    # permessage-deflate on the server's WebSockets (every browser offers it). Off: PCM and
    # animation bytes barely compress and zlib costs more CPU per message than relaying it
    # (figures in bench/README.md).
    relay_compression: bool = False
    idle_timeout_seconds: float = Field(default=120.0, gt=0)
    max_session_seconds: float = Field(default=3600.0, gt=0)
    max_sessions_per_principal: int = Field(default=20, ge=1)
    max_sessions_global: int = Field(default=1000, ge=1)
    upstream_pool_size: int = Field(default=0, ge=0)
    default_sample_rate: int = 16000
    # This instance's name in relay leases (Kubernetes: the pod name); default: host-pid-random.
    instance_id: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^\S+$")
    # Shutdown: how long conversations in flight may take to finish before the sessions are
    # moved (or, without Redis, ended). Fit it to the grace period (deploy/README.md).
    drain_timeout_seconds: float = Field(default=30.0, ge=0, le=600)
    # The built-in demo agent (POST /v1/relay/sessions/{id}/say: espeak-ng speech through a
    # producer socket). Off: that route answers speechUnavailable.
    demo_agent_enabled: bool = True

    # --- RTC mode (LiveKit): all three or none (none: the /v1/rtc routes say rtcNotConfigured) ---
    # Where browsers and the avatar publisher join (wss://...); the server API is the same host.
    livekit_url: str | None = None
    # The key is no secret (every token names it as its issuer); the secret signs the tokens.
    livekit_api_key: str | None = None
    livekit_api_secret: SecretStr | None = None
    # The browser's access token: only joining needs it valid (LiveKit refreshes a joined one).
    rtc_token_ttl_seconds: int = Field(default=900, ge=60, le=86_400)
    # The avatar publisher's token: it rejoins the room with it for the whole session.
    rtc_publisher_token_ttl_seconds: int = Field(default=86_400, ge=60)
    rtc_idle_timeout_seconds: float = Field(default=120.0, gt=0)
    rtc_max_session_seconds: float = Field(default=3600.0, gt=0)
    # The avatar's participant identity in the room, and whom it publishes on behalf of.
    rtc_avatar_identity: str = Field(default="spatialreal-avatar", min_length=1, max_length=128)
    rtc_agent_identity: str = Field(default="avatar-relay-agent", min_length=1, max_length=128)
    # A room this server created closes this long after its last participant left.
    rtc_room_empty_timeout_seconds: int = Field(default=300, ge=0)

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
        problems.extend(self._region_problems())
        problems.extend(self._livekit_problems())
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _region_problems(self) -> list[str]:
        regions = self.regions
        if regions[0] in regions[1:]:
            return ["SPATIALREAL_FALLBACK_REGIONS: must not repeat SPATIALREAL_REGION"]
        if len(set(regions)) != len(regions):
            return ["SPATIALREAL_FALLBACK_REGIONS: lists a region twice"]
        preset = self.provider_preset
        problems: list[str] = []
        for index, region in enumerate(regions):
            if region in preset.regions:
                continue
            console = self.spatialreal_console_urls.get(region)
            ingress = self.spatialreal_ingress_urls.get(region)
            if index == 0:
                console = self.spatialreal_console_url or console
                ingress = self.spatialreal_ingress_url or ingress
            if console and ingress:
                continue  # explicit URLs: any region name will do
            name = "SPATIALREAL_REGION" if index == 0 else "SPATIALREAL_FALLBACK_REGIONS"
            known = ", ".join(r.value for r in preset.regions)
            problems.append(
                f"{name}: provider {self.spatialreal_provider.value} has no region"
                f" {region.value} (it has: {known}); pick one of those, set"
                " SPATIALREAL_PROVIDER, or give the region's console and ingress URLs"
            )
        return problems

    def _livekit_problems(self) -> list[str]:
        given = {
            "LIVEKIT_URL": bool(self.livekit_url),
            "LIVEKIT_API_KEY": bool(self.livekit_api_key),
            "LIVEKIT_API_SECRET": self.livekit_api_secret is not None
            and bool(self.livekit_api_secret.get_secret_value()),
        }
        if not any(given.values()):
            return []
        problems = [
            f"{name}: required with the other LiveKit settings (RTC mode needs all three)"
            for name, present in given.items()
            if not present
        ]
        url = self.livekit_url or ""
        if url and urlsplit(url).scheme.lower() not in LIVEKIT_URL_SCHEMES:
            problems.append("LIVEKIT_URL: must start with wss://, ws://, https:// or http://")
        if self.rtc_publisher_token_ttl_seconds < self.rtc_max_session_seconds:
            problems.append(
                "RTC_PUBLISHER_TOKEN_TTL_SECONDS: must be at least RTC_MAX_SESSION_SECONDS (the"
                " avatar publisher rejoins the room with its token for the whole session)"
            )
        return problems

    # --- derived views ---

    @property
    def rtc_configured(self) -> bool:
        """True when LiveKit is configured: RTC sessions can be created."""
        return bool(self.livekit_url and self.livekit_api_key and self.livekit_api_secret)

    @property
    def provider_preset(self) -> ProviderPreset:
        return PROVIDERS[self.spatialreal_provider]

    @property
    def token_api(self) -> TokenApi:
        return self.spatialreal_token_api or self.provider_preset.token_api

    @property
    def primary_region(self) -> Region:
        return self.spatialreal_region or self.provider_preset.default_region

    @property
    def fallback_regions(self) -> list[Region]:
        """SPATIALREAL_FALLBACK_REGIONS, else the provider's other global regions (a `cn-*`
        region is a deployment of its own: never a default fallback, and gets none)."""
        if self.spatialreal_fallback_regions is not None:
            return list(self.spatialreal_fallback_regions)
        primary = self.primary_region
        if primary.value.startswith("cn-"):
            return []
        return [
            r
            for r in self.provider_preset.regions
            if r != primary and not r.value.startswith("cn-")
        ]

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
        return [self.primary_region, *self.fallback_regions]

    def endpoints(self) -> list[Endpoint]:
        """Upstream endpoints in the order to try them: primary region first, then fallbacks.

        Explicit URLs win over the provider's preset (the primary's SPATIALREAL_CONSOLE_URL /
        SPATIALREAL_INGRESS_URL over the per-region maps over the preset).
        """
        preset = self.provider_preset
        token_api = self.token_api
        out: list[Endpoint] = []
        for index, region in enumerate(self.regions):
            known = region in preset.regions
            console = self.spatialreal_console_urls.get(region) or (
                preset.console_url(region) if known else ""
            )
            ingress = self.spatialreal_ingress_urls.get(region) or (
                preset.ingress_url(region) if known else ""
            )
            if index == 0:
                console = self.spatialreal_console_url or console
                ingress = self.spatialreal_ingress_url or ingress
            out.append(Endpoint(region.value, console.rstrip("/"), ingress.rstrip("/"), token_api))
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
