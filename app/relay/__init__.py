"""Host Mode relay: the pure per-session core (`session`, `delivery`, `conversations`,
`replay`, `effects`, ...) and, around them, the I/O shell (`shell`, `client_link`)."""
