"""The ``POST /predict`` body: ``{"inputs": "a text" | ["t1", ...], "explain": false}``, checked strictly.

Every problem is an :class:`ApiError` with the HTTP status and a message naming the field, what was
expected and what came: 422 for a malformed or ill-typed body, 413 for one over a size limit.
Unknown fields are refused (a misspelt ``"explian"`` would otherwise be silently ignored).

>>> parse_predict(b'{"inputs": "hi"}', max_texts=8, max_chars=100)
(['hi'], False)
"""

from __future__ import annotations

import json

FIELDS = ("inputs", "explain")


class ApiError(Exception):
    """An HTTP error answer: ``status`` and the one-line message of its ``{"error": ...}`` body."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def json_type(value) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    name = names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)
    return f"{name} {json.dumps(value, ensure_ascii=False)[:40]}"


def parse_predict(body: bytes, max_texts: int, max_chars: int) -> tuple[list[str], bool]:
    """The texts and the explain flag of a request body, or ApiError."""
    try:
        obj = json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(422, "body is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ApiError(422, f"body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(obj, dict):
        raise ApiError(422, f'body must be a JSON object with an "inputs" field, got {json_type(obj)}')
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise ApiError(422, f"unknown field(s) {unknown}; expected {list(FIELDS)}")
    if "inputs" not in obj:
        raise ApiError(422, 'missing field "inputs": a text or a list of texts')
    inputs, explain = obj["inputs"], obj.get("explain", False)
    if not isinstance(explain, bool):
        raise ApiError(422, f'"explain" must be true or false, got {json_type(explain)}')
    if isinstance(inputs, str):
        inputs = [inputs]
    elif not isinstance(inputs, list):
        raise ApiError(422, f'"inputs" must be a string or a list of strings, got {json_type(inputs)}')
    if not inputs:
        raise ApiError(422, '"inputs" is an empty list; send at least one text')
    if len(inputs) > max_texts:
        raise ApiError(
            413, f"{len(inputs)} texts in one request; the limit is {max_texts} (--max-request-texts)"
        )
    for i, text in enumerate(inputs):
        if not isinstance(text, str):
            raise ApiError(422, f"inputs[{i}]: expected a string, got {json_type(text)}")
        if len(text) > max_chars:
            raise ApiError(
                413, f"inputs[{i}]: {len(text)} characters; the limit is {max_chars} (--max-text-chars)"
            )
    return inputs, explain
