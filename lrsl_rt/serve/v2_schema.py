"""The Open Inference Protocol (v2) inference body and answer, checked strictly; no server imports.

A request names one input tensor, ``text``, of datatype ``BYTES`` and shape ``[N]`` or ``[N, 1]``
(one text per row, as Triton and KServe clients send a batch of strings); ``data`` holds the N
texts, flat or nested by the shape::

    {"id": "42", "parameters": {"abstain": true, "explain": false},
     "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["card not here", "rate?"]}],
     "outputs": [{"name": "label"}, {"name": "score"}]}

The answer carries one tensor of shape ``[N]`` per output (all of them unless ``outputs`` names
some), in the order asked: the fields of a ``/predict`` record (:data:`lrsl_rt.prediction.RECORD_FIELDS`,
as :data:`OUTPUTS` types them), ``out_of_scope``
when the request abstains, ``exit_layer`` for a bundle with exits, and ``explanation`` (each a JSON
document, as ``/predict``'s ``explanation`` field) when it is asked for, by the ``explain``
parameter or by naming the output. ``fused_score`` is not an output: it is null for an easy sample,
and an FP32 tensor cannot hold a null.

Parameters: ``abstain`` and ``explain`` (booleans). Triton's client also sends ``binary_data_output``
and, per output, ``binary_data``: they ask for the binary tensor extension, which this server does
not implement, and it answers JSON, which the client reads alike. Binary input data
(``binary_data_size``) is refused. Any other field or parameter is refused, as in ``/predict``. Every
problem is an :class:`~.schema.ApiError` naming the field: 400 for a malformed request (the v2
error status), 413 for one over a size limit.

>>> parse_infer(b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}', 8, 100)
InferRequest(texts=['hi'], explain=False, abstain=None, id=None, outputs=None)
"""

from __future__ import annotations

import dataclasses
import json

from ..io import unicode_problem
from ..prediction import OPTIONAL_FIELDS, RECORD_FIELDS
from .schema import ApiError, json_type, load_json, quote

INPUT = "text"
DATATYPES = {str: "BYTES", int: "INT64", float: "FP32", bool: "BOOL"}  # a record field's type -> v2's
NULLABLE = ("fused_score",)  # null for an easy sample: no FP32 tensor can hold it
# output name -> datatype: the record's fields (lrsl_rt.prediction), then the explanation (JSON text)
BASE_OUTPUTS = tuple(name for name in RECORD_FIELDS if name not in NULLABLE)
OUTPUTS = {name: DATATYPES[RECORD_FIELDS[name]] for name in BASE_OUTPUTS}
OUTPUTS |= {name: DATATYPES[t] for name, t in OPTIONAL_FIELDS.items()}  # exits; abstaining requests
OUTPUTS["explanation"] = "BYTES"  # requests that ask for it: one JSON document per text
REQUEST_FIELDS = ("id", "parameters", "inputs", "outputs")
INPUT_FIELDS = ("name", "shape", "datatype", "parameters", "data")
PARAMETERS = ("abstain", "explain", "binary_data_output")
BINARY_HINT = "send the texts as JSON data (tritonclient: set_data_from_numpy(..., binary_data=False))"


@dataclasses.dataclass(frozen=True)
class InferRequest:
    texts: list[str]
    explain: bool
    abstain: bool | None  # None: the server's choice
    id: str | None
    outputs: tuple[str, ...] | None  # None: every output the request has


def bad(message: str) -> ApiError:
    return ApiError(400, message)


def _object(value, where: str, allowed: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise bad(f"{where} must be a JSON object, got {json_type(value)}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise bad(
            f"{where}: unknown field(s) {', '.join(quote(k) for k in unknown[:5])}; expected {list(allowed)}"
        )
    return value


def _parameters(value, where: str, allowed: tuple[str, ...]) -> dict:
    params = _object(value, f"{where}parameters", allowed)
    for key, v in params.items():
        if not isinstance(v, bool):
            raise bad(f"{where}parameters.{key} must be true or false, got {json_type(v)}")
    return params


def parse_infer(body: bytes, max_texts: int, max_chars: int) -> InferRequest:
    """The texts, parameters and requested outputs of a v2 inference body, or ApiError."""
    try:
        obj = load_json(body)
    except ApiError as e:
        raise bad(e.message) from None
    obj = _object(obj, "body", REQUEST_FIELDS)
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, str):
        raise bad(f'"id" must be a string, got {json_type(rid)}')
    params = _parameters(obj.get("parameters", {}), "", PARAMETERS)
    outputs = _outputs(obj["outputs"]) if "outputs" in obj else None
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        got = "no inputs" if inputs is None else json_type(inputs)
        raise bad(f'"inputs" must be a list of one tensor named "{INPUT}", got {got}')
    texts = _texts(_object(inputs[0], "inputs[0]", INPUT_FIELDS), max_texts, max_chars)
    explain = params.get("explain", False) or (outputs is not None and "explanation" in outputs)
    return InferRequest(texts, explain, params.get("abstain"), rid, outputs)


def _outputs(value) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise bad(f'"outputs" must be a non-empty list of {{"name": ...}} objects, got {json_type(value)}')
    names = []
    for i, out in enumerate(value):
        out = _object(out, f"outputs[{i}]", ("name", "parameters"))
        _parameters(out.get("parameters", {}), f"outputs[{i}].", ("binary_data",))
        name = out.get("name")
        if name not in OUTPUTS:
            got = json_type(name) if name is not None else "no name"
            raise bad(f"outputs[{i}]: unknown output {got}; the outputs are {list(OUTPUTS)}")
        names.append(name)
    return tuple(names)


def _texts(inp: dict, max_texts: int, max_chars: int) -> list[str]:
    """The texts of the input tensor, checked against its name, datatype and shape."""
    if inp.get("name") != INPUT:
        raise bad(f'inputs[0].name must be "{INPUT}", got {json_type(inp.get("name"))}')
    if inp.get("datatype") != "BYTES":
        raise bad(f'inputs[0].datatype must be "BYTES" (texts), got {json_type(inp.get("datatype"))}')
    params = _object(inp.get("parameters", {}), "inputs[0].parameters", ("binary_data_size",))
    if params:
        raise bad(f"inputs[0]: binary tensor data is not supported; {BINARY_HINT}")
    shape = inp.get("shape")
    if not (isinstance(shape, list) and shape and all(type(d) is int and d >= 0 for d in shape)):
        raise bad(f"inputs[0].shape must be a list of sizes, [N] or [N, 1], got {json_type(shape)}")
    if len(shape) > 2 or shape[1:] not in ([], [1]):
        raise bad(f"inputs[0].shape {shape}: expected [N] or [N, 1], one text per row")
    n = shape[0]
    if n == 0:
        raise bad(f"inputs[0].shape {shape}: send at least one text")
    if n > max_texts:
        raise ApiError(413, f"{n} texts in one request; the limit is {max_texts} (--max-request-texts)")
    data = inp.get("data")
    if not isinstance(data, list):
        raise bad(f"inputs[0].data must be a list of {n} strings, got {json_type(data)}")
    if len(shape) == 2 and all(isinstance(row, list) for row in data):
        data = [x for row in data for x in row]
    if len(data) != n:
        raise bad(f"inputs[0].data holds {len(data)} element(s); shape {shape} needs {n}")
    for i, text in enumerate(data):
        if not isinstance(text, str):
            raise bad(f"inputs[0].data[{i}]: expected a string, got {json_type(text)}")
        if len(text) > max_chars:
            raise ApiError(
                413,
                f"inputs[0].data[{i}]: {len(text)} characters; the limit is {max_chars} (--max-text-chars)",
            )
        problem = unicode_problem(text)
        if problem:
            raise bad(f"inputs[0].data[{i}]: {problem}")
    return data


def available_outputs(abstain: bool, explain: bool, exits: bool) -> tuple[str, ...]:
    """The outputs a request gets when it names none.

    >>> available_outputs(True, False, False)[-1]
    'out_of_scope'
    """
    extra = [("exit_layer", exits), ("out_of_scope", abstain), ("explanation", explain)]
    return BASE_OUTPUTS + tuple(name for name, present in extra if present)


def check_outputs(asked: tuple[str, ...], have: tuple[str, ...]) -> None:
    """ApiError 400 when a request names an output it cannot have."""
    for name in asked:
        if name not in have:
            why = {"out_of_scope": "the request does not abstain (parameters.abstain)"}.get(
                name, "this bundle has no exits"
            )
            raise bad(f"output {name} is not given: {why}")


def infer_response(model: str, request_id: str, names: tuple[str, ...], preds: list) -> dict:
    """The v2 answer: one ``[N]`` tensor per output name, from the predictions."""
    n = len(preds)
    outputs = []
    for name in names:
        if name == "explanation":
            data = [json.dumps(p.explanation.to_dict(), ensure_ascii=False) for p in preds]
        else:
            data = [getattr(p, name) for p in preds]
        outputs.append({"name": name, "datatype": OUTPUTS[name], "shape": [n], "data": data})
    return {"model_name": model, "id": request_id, "outputs": outputs}


def tensor_metadata(names) -> list[dict]:
    """``$metadata_tensor`` objects: name, datatype, shape ``[-1]`` (one element per text)."""
    return [{"name": name, "datatype": OUTPUTS.get(name, "BYTES"), "shape": [-1]} for name in names]
