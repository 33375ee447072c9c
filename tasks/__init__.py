"""Celery tasks: thin wrappers that load by id and call subscriptions.services.

Listed in CELERY_IMPORTS (this package is not a Django app, so autodiscovery
would not find it). Every task has a fixed name so renaming a module never
strands queued messages.
"""
