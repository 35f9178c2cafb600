"""The emulator's default identity: one app, one key, one avatar.

Deliberately duplicated from app/settings.py (the emulator must not import the code it stands in
for); tests/emulator asserts they stay equal.
"""

DEFAULT_APP_ID = "emulator-app"
DEFAULT_AVATAR_ID = "emulator-avatar"
DEFAULT_API_KEY = "emulator-api-key"
