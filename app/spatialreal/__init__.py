"""Our SpatialReal client: console (session tokens) and ingress v2 (avatar WebSocket).

Built on httpx, websockets and the generated protobuf code, with regional fallback guarded by
per-region circuit breakers. Every failure is an `AppError` with a stable code and a phase.

    async with ConsoleClient.from_settings(settings) as console:
        ingress = IngressClient.from_settings(settings, console)
        async with await ingress.connect(avatar_id, 16000) as conn:
            await conn.send_audio(new_request_id(datetime.now(UTC)), pcm, end=True)
            async for message in conn:
                ...  # message.raw: the original bytes
"""

from app.spatialreal.classify import classify
from app.spatialreal.client import IngressClient
from app.spatialreal.connection import IngressConnection
from app.spatialreal.console import ConsoleClient, MintedToken
from app.spatialreal.fallback import try_regions, worth_another_region
from app.spatialreal.handshake import ingress_websocket_url
from app.spatialreal.messages import UpstreamMessage, parse_upstream
from app.spatialreal.regions import BreakerState, CircuitBreaker, RegionBreakers
from app.spatialreal.request_ids import is_request_id, new_request_id

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "ConsoleClient",
    "IngressClient",
    "IngressConnection",
    "MintedToken",
    "RegionBreakers",
    "UpstreamMessage",
    "classify",
    "ingress_websocket_url",
    "is_request_id",
    "new_request_id",
    "parse_upstream",
    "try_regions",
    "worth_another_region",
]
