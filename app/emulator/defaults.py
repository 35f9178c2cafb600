"""The emulator's default identity: one app, one key, one avatar.

Deliberately duplicated from app/settings.py (the emulator must not import the code it stands in
for); tests/emulator asserts they stay equal.
"""

DEFAULT_APP_ID = "emulator-app"
DEFAULT_AVATAR_ID = "emulator-avatar"
DEFAULT_API_KEY = "emulator-api-key"

# The LiveKit stand-in's key pair (the secret is long enough for HS256 without a warning).
DEFAULT_LIVEKIT_API_KEY = "emulator-livekit-key"
DEFAULT_LIVEKIT_API_SECRET = "emulator-livekit-secret-0123456789abcdef"  # noqa: S105
