"""The built-in demo agent: text to speech on the server, streamed into a relay session.

It is what a developer's voice agent does (docs/producers.md), built from parts a user's own agent
would use: a text-to-speech engine (`speech.py`, espeak-ng) and the producer client of the
`avatar-relay-client` distribution.
"""
