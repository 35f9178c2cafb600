"""avatar-relay: a session-token broker and Host Mode relay for SpatialReal AvatarKit avatars."""

__version__ = "0.1.0"
