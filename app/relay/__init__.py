"""Host Mode relay: the pure per-session core (`session`,
`replay`, `effects`) and, around them, the I/O shell."""
