"""What every API view's schema shares: the error body and the answers any authenticated call may get."""

from subscriptions.api import serializers

E = serializers.ErrorSerializer
AUTH_ERRORS = {401: E, 403: E}


def errors(*codes: int) -> dict[int, type]:
    return {**AUTH_ERRORS, **dict.fromkeys(codes, E)}
