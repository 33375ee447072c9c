"""Django's messages storage (the admin's "3 deliveries retried"), built only for a request that uses it.

Django's FallbackStorage builds its cookie storage (a signer, its key derived
from SECRET_KEY) and its session storage for every request that passes
MessageMiddleware, though only the admin's pages ever add or read a message:
about 2 % of a publish's CPU (bench/RESULTS.md). This one builds them on the
first add or read; a request that does neither costs a plain object.
"""

from functools import cached_property
from typing import Any

from django.contrib.messages.storage.base import BaseStorage
from django.contrib.messages.storage.fallback import FallbackStorage
from django.http import HttpRequest


class LazyFallbackStorage(FallbackStorage):
    """FallbackStorage (cookie, then session) whose two storages are made on first use."""

    def __init__(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        BaseStorage.__init__(self, request, *args, **kwargs)
        self._storage_arguments = (request, args, kwargs)
        self._used_storages = set()

    @cached_property
    def storages(self) -> list[BaseStorage]:  # type: ignore[override] - FallbackStorage sets it in __init__
        request, args, kwargs = self._storage_arguments
        return [storage_class(request, *args, **kwargs) for storage_class in self.storage_classes]
