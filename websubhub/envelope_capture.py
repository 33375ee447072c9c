"""Catching a message at the end of kombu's publish path: how queueing.Envelopes makes its template.

The hub's Redis channel (redis_broker.py) and its embedded filesystem channel
(embedded_broker.py) both take this mixin; their `_put` appends to the list
instead of sending while `envelope_capture` runs.
"""

import contextlib
from collections.abc import Iterator
from typing import Any


class EnvelopeCapture:
    """A kombu virtual channel whose messages can be caught just before they are sent."""

    # While envelope_capture runs: the (key, message) of each message published, which are not sent.
    _hub_capture: list[tuple[str, dict[str, Any]]] | None = None

    @contextlib.contextmanager
    def envelope_capture(self) -> Iterator[list[tuple[str, dict[str, Any]]]]:
        """Messages published in this block go through all of kombu's publish path but the last step (the LPUSH,
        the file): the list gets each one's key (its Redis list, or its queue's name) and message (the envelope
        kombu would JSON-encode)."""
        captured: list[tuple[str, dict[str, Any]]] = []
        self._hub_capture = captured
        try:
            yield captured
        finally:
            self._hub_capture = None
