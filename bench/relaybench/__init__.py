"""The relay benchmark's parts (bench/relay.py runs them): `stats` (figures from samples),
`verdicts` (kept up / real time / load generator), `loadclient` (one simulated browser),
`load` (one step: N sessions, measured), `servers` (emulator, relay and floor processes),
`scale` (instances behind nginx with Redis), `deflate` (permessage-deflate per message) and
`report` (the JSON and its ratios)."""
