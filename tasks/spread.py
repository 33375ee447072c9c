import logging

from celery import shared_task

from subscriptions import services
from tasks.retry import WORK_DATABASE_RETRY
from websubhub.hub_settings import hub_settings
from websubhub.queues import TaskName

logger = logging.getLogger(__name__)

# Topic fetches for hub.mode=publish: a few quick retries, then give up.
FETCH_MAX_RETRIES = 5


@shared_task(
    name=TaskName.SPREAD,
    **WORK_DATABASE_RETRY,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def spread(*, notification_id: int) -> None:
    """Create and enqueue one delivery per matching callback (idempotent: unique delivery per subscription)."""
    services.notification_spread(notification_id=notification_id)


@shared_task(
    name=TaskName.FETCH_TOPIC,
    autoretry_for=(services.DeliveryFailed,),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=FETCH_MAX_RETRIES,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def fetch_topic(*, topic: str) -> None:
    """Fetch a topic URL after a publish ping and publish what it holds."""
    try:
        services.topic_fetch_and_publish(topic=topic)
    except services.HubError as exc:
        # Too large: a retry would fetch the same, so the ping ends here.
        logger.warning("publish of %s refused: %s (limit %s bytes)", topic, exc, hub_settings.HUB_MAX_CONTENT_BYTES)
