"""Our SpatialReal client: console (session tokens) and ingress v2 (avatar WebSocket).

Built on httpx, websockets and the generated protobuf code, with regional fallback guarded by
per-region circuit breakers. Every failure is an `AppError` with a stable code and a phase.
"""

from app.ingress.classify import classify
from app.ingress.regions import BreakerState, CircuitBreaker, RegionBreakers
from app.ingress.request_ids import is_request_id, new_request_id

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "RegionBreakers",
    "classify",
    "is_request_id",
    "new_request_id",
]
