from celery import shared_task

from subscriptions import services


@shared_task(name="hub.expire_subscriptions", ignore_result=True)
def expire_subscriptions() -> int:
    """Remove subscriptions whose lease has ended (run by beat)."""
    return services.subscriptions_expire()


@shared_task(name="hub.sweep", ignore_result=True)
def sweep() -> int:
    """Re-send notifications that never reached spread and requests never verified (run by beat)."""
    return services.hub_sweep()
