import codecs
import json
from typing import Any

from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser, get_encoding
from rest_framework.settings import api_settings
from rest_framework.utils import json as drf_json

from websubhub.hub_settings import hub_settings


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


def _lone_surrogate(text: str) -> str | None:
    """The first character of text that UTF-8 cannot encode (a lone surrogate), as its JSON escape."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"\\u{ord(text[exc.start]):04x}"
    return None


def _first_lone_surrogate(value: Any) -> str | None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found = _lone_surrogate(item)
            if found:
                return found
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def invalid_unicode(data: Any) -> dict[str, list[str]]:
    """Which top-level fields hold a string (key or value, at any depth) that is not valid Unicode.

    JSON's \\u escapes can spell a lone surrogate ("\\udc00"), which the parser accepts but
    UTF-8 cannot encode: storing or re-encoding it would fail (a 500), so it is refused here.
    """
    try:
        # Fast path, at C speed, for the valid documents that nearly every request is.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
        return {}
    except UnicodeEncodeError:
        pass
    why = "holds text that is not valid Unicode: a lone surrogate ({}), which UTF-8 cannot encode"
    non_field = api_settings.NON_FIELD_ERRORS_KEY
    if not isinstance(data, dict):
        return {non_field: [f"the document {why.format(_first_lone_surrogate(data))}"]}
    errors: dict[str, list[str]] = {}
    for key, value in data.items():
        if found := _lone_surrogate(key):
            errors.setdefault(non_field, []).append(f"a field name {why.format(found)}")
        elif found := _first_lone_surrogate(value):
            errors[key] = [f"{key} {why.format(found)}"]
    return errors


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, answering 400 (never 500) to JSON nested deeper than HUB_MAX_JSON_DEPTH
    and to strings that are not valid Unicode."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        # DRF's JSONParser.parse, on the body's bytes rather than through a codecs reader, so that a UTF-8
        # body can be seen to hold no \u escape: then it holds no lone surrogate, and the check is skipped.
        encoding = get_encoding(parser_context or {})
        raw = stream.read()
        try:
            data = drf_json.loads(
                raw.decode(encoding), parse_constant=drf_json.strict_constant if self.strict else None
            )
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        limit = hub_settings.HUB_MAX_JSON_DEPTH
        if json_depth(data) > limit:
            raise ParseError(f"JSON nested deeper than HUB_MAX_JSON_DEPTH ({limit} levels)")
        if codecs.lookup(encoding).name != "utf-8" or b"\\u" in raw:
            errors = invalid_unicode(data)
            if errors:
                raise ValidationError(errors)
        return data
