# Importing the Celery app here makes `@shared_task` bind to it and lets
# `transaction.on_commit(task.delay)` publish from web processes.
from websubhub.celery import app as celery_app

__all__ = ("celery_app",)
