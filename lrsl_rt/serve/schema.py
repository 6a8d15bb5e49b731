"""The ``POST /predict`` body: ``{"inputs": "a text" | ["t1", ...], "explain": false}``, checked strictly.

Every problem is an :class:`ApiError` with the HTTP status and a message naming the field, what was
expected and what came: 422 for a malformed or ill-typed body, 413 for one over a size limit.
Unknown fields are refused (a misspelt ``"explian"`` would otherwise be silently ignored). Whatever the
body holds, the answer is one of these, never an exception: JSON that Python's parser refuses beyond
the grammar (nesting deeper than its recursion limit, an integer of more digits than
``sys.get_int_max_str_digits()``) and a ``"\ud800"`` escape (a lone surrogate, which the tokenizer
cannot encode) are 422 too. Messages quote at most a few dozen characters of what came.

>>> parse_predict(b'{"inputs": "hi"}', max_texts=8, max_chars=100)
(['hi'], False)
"""

from __future__ import annotations

import json
import sys

from ..io import unicode_problem

FIELDS = ("inputs", "explain")
SHOWN = 40  # characters of a client's value quoted in a message


class ApiError(Exception):
    """An HTTP error answer: ``status`` and the one-line message of its ``{"error": ...}`` body."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def json_type(value) -> str:
    """What a parsed JSON value is, for a message: its type and a short quote (never the whole value).

    >>> json_type([1, [2, 3]]), json_type(7), json_type("x" * 99)[:14]
    ('an array of 2 items', 'a number 7', 'a string "xxxx')
    """
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    if isinstance(value, str):
        return f"a string {quote(value)}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean {json.dumps(value)}"
    return f"a number {str(value)[:SHOWN]}"


def quote(text: str) -> str:
    """The start of a client's string as a JSON literal in ASCII (a lone surrogate cannot break the answer).

    >>> print(quote("café"))
    "caf\\u00e9"
    """
    return json.dumps(text[:SHOWN])


def load_json(body: bytes):
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(422, "body is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ApiError(422, f"body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise ApiError(422, "body is not usable JSON: arrays or objects nested too deeply") from None
    except ValueError:  # an integer literal longer than Python converts
        limit = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
        raise ApiError(422, f"body is not usable JSON: a number of more than {limit} digits") from None


def parse_predict(body: bytes, max_texts: int, max_chars: int) -> tuple[list[str], bool]:
    """The texts and the explain flag of a request body, or ApiError."""
    obj = load_json(body)
    if not isinstance(obj, dict):
        raise ApiError(422, f'body must be a JSON object with an "inputs" field, got {json_type(obj)}')
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        shown = ", ".join([quote(k) for k in unknown[:5]] + (["..."] if len(unknown) > 5 else []))
        raise ApiError(422, f"unknown field(s) {shown}; expected {list(FIELDS)}")
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
        problem = unicode_problem(text)
        if problem:
            raise ApiError(422, f"inputs[{i}]: {problem}")
    return inputs, explain
