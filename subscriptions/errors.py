"""The hub's service errors; no imports, so the pure rules below the services can raise them too."""


class HubError(Exception):
    """A request the hub refuses; `status` is the 4xx to answer with and the message says why.

    `field` is the form field it concerns (hub.callback), named in the message as /hub
    spells it; the JSON API answers under its own name for the field (see api/errors.py).
    """

    def __init__(self, message: str, status: int = 400, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


class DeliveryFailed(Exception):
    """A delivery attempt failed in a way worth retrying (Celery's autoretry catches it)."""
