"""HTTP and WebSocket routes: thin shells that turn requests into service calls."""
