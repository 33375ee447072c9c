"""The Celery application: `celery -A websubhub worker` (add `-B` or run `celery -A websubhub beat`)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "websubhub.settings")

app = Celery("websubhub")
# Every setting named CELERY_* in websubhub/settings.py configures this app.
app.config_from_object("django.conf:settings", namespace="CELERY")
