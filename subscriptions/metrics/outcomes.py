"""The names of what became of a delivery run or a (un)subscribe request: metric labels and log words alike."""

from enum import StrEnum


class DeliveryOutcome(StrEnum):
    """How one delivery run ended (the `outcome` label of websubhub_deliveries_total)."""

    DELIVERED = "delivered"
    # The attempt failed and another follows.
    RETRIED = "retried"
    # Out of retries.
    FAILED = "failed"
    # Deferred before an attempt by the rate limit or the cap on requests in flight.
    RATE_LIMITED = "rate_limited"
    # The callback answered 410: the subscription ended.
    GONE = "gone"
    # The subscription ended before the attempt.
    CANCELLED = "cancelled"
    # The subscription is paused by the circuit breaker.
    PARKED = "parked"


class VerificationOutcome(StrEnum):
    """How a (un)subscribe request ended (the `outcome` label of websubhub_verifications_total)."""

    VERIFIED = "verified"
    FAILED = "failed"
    DENIED = "denied"


# Plain strings, in label order, for code that lists every label value.
DELIVERY_OUTCOMES: tuple[str, ...] = tuple(outcome.value for outcome in DeliveryOutcome)
VERIFICATION_OUTCOMES: tuple[str, ...] = tuple(outcome.value for outcome in VerificationOutcome)
