from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, answering 400 (never 500) to JSON nested deeper than HUB_MAX_JSON_DEPTH."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply") from None
        limit = settings.HUB_MAX_JSON_DEPTH
        if json_depth(data) > limit:
            raise ParseError(f"JSON nested deeper than HUB_MAX_JSON_DEPTH ({limit} levels)")
        return data
