"""Content negotiation: DRF's, with the API's usual request answered before any parsing."""

from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request


class HubContentNegotiation(DefaultContentNegotiation):
    """DRF's negotiation; a view with one renderer and a request without Accept (or `*/*`, or exactly the
    renderer's type) and without a format override gets that renderer at once.

    That is DRF's own answer for those requests: parsing the Accept header and
    ranking its media types per request was 6 % of a publish's CPU. Every other
    request (a list of types, parameters, a format, several renderers) goes
    through DRF, which answers 406 when nothing matches.
    """

    def select_renderer(
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, Any]:
        if len(renderers) == 1 and not format_suffix:
            override = self.settings.URL_FORMAT_OVERRIDE
            if not override or override not in request.query_params:
                renderer = renderers[0]
                if request.META.get("HTTP_ACCEPT", "*/*") in ("*/*", renderer.media_type):
                    return renderer, renderer.media_type
        return super().select_renderer(request, renderers, format_suffix)
