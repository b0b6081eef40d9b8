"""The Open Inference Protocol (KServe v2) wire format, apart from the app that serves it.

What `server.create_app` speaks: the tensor and parameter names, the JSON schemas of the
request and answer bodies (served at `/v2/openapi.json`), decoding an infer request
(JSON, or the binary tensor extension after an `Inference-Header-Content-Length` JSON
header) into an FP32 batch, and encoding the logits back. No FastAPI here: plain
functions of bytes and tensors, which the request-path measurement (`overhead`) times
on their own.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
import torch

__all__ = ["ERROR_SCHEMA", "HEADER_LEN", "INFER_REQUEST_SCHEMA", "INFER_RESPONSE_SCHEMA",
           "INPUT_NAME", "METADATA_SCHEMA", "MODEL_VERSION", "NO_BODY", "OUTPUT_NAME",
           "TENSOR_SCHEMA", "BadRequest", "encode_infer_response", "error_docs", "json_doc",
           "parse_infer_request", "request_slo_ms", "wants_binary_output"]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MODEL_VERSION = "1"
HEADER_LEN = "inference-header-content-length"


class BadRequest(ValueError):
    """The client sent something the protocol or the model cannot take (HTTP 400)."""


# ------------------------------------------------------------------- OpenAPI
# The handlers read raw bodies (the binary tensor extension is not JSON), so FastAPI cannot
# infer the request schema: it is written out here. It is what `/v2/openapi.json` serves and
# what the schemathesis tests generate requests from.
ERROR_SCHEMA = {"type": "object", "required": ["error"],
                "properties": {"error": {"type": "string"}}}
TENSOR_SCHEMA = {
    "type": "object", "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"},
        "parameters": {"type": "object"},
        "data": {"type": "array", "items": {"type": "number"}},
    },
}
INFER_REQUEST_SCHEMA = {
    "type": "object", "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": TENSOR_SCHEMA},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}}}},
        "parameters": {"type": "object", "properties": {
            "slo_ms": {"type": "number"}, "binary_data_output": {"type": "boolean"}}},
    },
}
INFER_RESPONSE_SCHEMA = {
    "type": "object", "required": ["model_name", "outputs", "parameters"],
    "properties": {
        "model_name": {"type": "string"}, "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": {"type": "object", "required": ["subnet", "batch_size", "queue_ms"],
                       "properties": {"subnet": {"type": "string"},
                                      "subnet_acc": {"type": "number"},
                                      "batch_size": {"type": "integer"},
                                      "queue_ms": {"type": "number"},
                                      "service_ms": {"type": "number"},
                                      "latency_ms": {"type": "number"}}},
        "outputs": {"type": "array", "items": TENSOR_SCHEMA},
    },
}
METADATA_SCHEMA = {
    "type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
    "properties": {"name": {"type": "string"},
                   "versions": {"type": "array", "items": {"type": "string"}},
                   "platform": {"type": "string"},
                   "inputs": {"type": "array", "items": {"type": "object"}},
                   "outputs": {"type": "array", "items": {"type": "object"}}},
}


def json_doc(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An OpenAPI response entry: `description`, with a JSON body following `schema`."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_docs(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI response entries for these error statuses (each an `{"error": ...}` body)."""
    what = {400: "bad input", 401: "missing or wrong bearer token", 404: "unknown model",
            429: "queue full (see Retry-After)", 503: "shutting down",
            504: "deadline missed (never a late answer)"}
    return {c: json_doc(ERROR_SCHEMA, what[c]) for c in codes}


NO_BODY = {"description": "no body", "content": {}}


# ------------------------------------------------------------------ parsing
def parse_infer_request(body: bytes, header_len: str | None, input_shape: tuple[int, ...],
                        max_batch: int) -> tuple[dict[str, Any], torch.Tensor]:
    """Validate an infer request; return its JSON header and the input as (N, C, H, W) FP32."""
    binary = b""
    if header_len is not None:
        try:
            n = int(header_len)
        except ValueError:
            raise BadRequest("Inference-Header-Content-Length must be an integer") from None
        if not 0 < n <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length {n} does not fit the body "
                             f"({len(body)} bytes)")
        body, binary = body[:n], body[n:]
    try:
        # orjson: ~10x faster than json on a batch-1 request's 784 numbers (the decode cost is
        # measured in benchmarks/serving.py), and strict (no NaN literals, valid UTF-8 only).
        req = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        # Python's json writes NaN / Infinity literals, which orjson refuses: read those
        # with json so the answer names the real problem (a non-finite input, below).
        try:
            req = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequest(f"request body is not valid JSON: {err}") from None
    if not isinstance(req, dict):
        raise BadRequest("request body must be a JSON object")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(f"'inputs' must be a list holding exactly one tensor named "
                         f"{INPUT_NAME!r}")
    tensor = inputs[0]
    for key in ("name", "shape", "datatype"):
        if key not in tensor:
            raise BadRequest(f"input tensor is missing {key!r}")
    if tensor["name"] != INPUT_NAME:
        raise BadRequest(f"unknown input {tensor['name']!r}; this model's input is "
                         f"{INPUT_NAME!r}")
    if tensor["datatype"] != "FP32":
        raise BadRequest(f"input datatype must be 'FP32', got {tensor['datatype']!r}")
    shape = tensor["shape"]
    if (not isinstance(shape, list) or len(shape) != 1 + len(input_shape)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape)):
        raise BadRequest(f"input shape must be [N, {', '.join(map(str, input_shape))}], "
                         f"got {shape!r}")
    if list(shape[1:]) != list(input_shape):
        raise BadRequest(f"input shape must be [N, {', '.join(map(str, input_shape))}], "
                         f"got {shape}")
    if not 1 <= shape[0] <= max_batch:
        raise BadRequest(f"batch of {shape[0]} images is outside 1..{max_batch} "
                         "(the most one request may carry)")
    count = math.prod(shape)
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("input 'parameters' must be an object")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if size != count * 4 or len(binary) != size:
            raise BadRequest(f"binary input must be {count * 4} bytes of little-endian FP32, "
                             f"got binary_data_size={size!r} and {len(binary)} bytes")
        arr = np.frombuffer(binary, dtype="<f4").copy()
    else:
        if "data" not in tensor:
            raise BadRequest("input tensor is missing 'data'")
        data = tensor["data"]
        if not isinstance(data, list):
            raise BadRequest("input 'data' must be a list of numbers")
        try:
            # numpy reads a list of floats ~3x faster than torch.tensor; without a dtype it
            # keeps strings, booleans and objects recognisable, so they are refused below
            # instead of being converted.
            arr = np.asarray(data)
        except (TypeError, ValueError):
            raise BadRequest("input 'data' must hold only numbers") from None
        if arr.dtype.kind == "b" or any(isinstance(v, bool) for v in data[:1]):
            raise BadRequest("input 'data' must hold numbers, not booleans")
        if arr.dtype.kind not in "iuf":
            raise BadRequest("input 'data' must hold only numbers")
        if arr.size != count:
            raise BadRequest(f"input 'data' has {arr.size} values, shape {shape} needs {count}")
        arr = arr.astype(np.float32, copy=False).reshape(-1)
    if not bool(np.isfinite(arr).all()):
        raise BadRequest("input holds NaN or infinite values")
    return req, torch.from_numpy(arr).view(*shape)


def request_slo_ms(req: dict[str, Any], default_ms: float, max_ms: float) -> float:
    """The request's deadline: its `parameters.slo_ms`, else `default_ms`; at most `max_ms`."""
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("'parameters' must be an object")
    slo = params.get("slo_ms", default_ms)
    if isinstance(slo, bool) or not isinstance(slo, int | float) or not math.isfinite(slo) \
            or not 0 < slo <= max_ms:
        raise BadRequest(f"parameters.slo_ms must be a number in (0, {max_ms}], "
                         f"got {slo!r}")
    return float(slo)


def wants_binary_output(req: dict[str, Any]) -> bool:
    """Whether the answer's logits go as binary (the binary tensor extension), not JSON."""
    params = req.get("parameters") or {}
    if params.get("binary_data_output"):
        return True
    outputs = req.get("outputs")
    if outputs is None:
        return False
    if not isinstance(outputs, list):
        raise BadRequest("'outputs' must be a list")
    binary = False
    for o in outputs:
        if not isinstance(o, dict) or o.get("name") != OUTPUT_NAME:
            raise BadRequest(f"unknown output; this model's output is {OUTPUT_NAME!r}")
        binary |= bool((o.get("parameters") or {}).get("binary_data"))
    return binary


def encode_infer_response(output: torch.Tensor, model_name: str, binary: bool,
                          parameters: dict[str, Any], request_id: Any = None
                          ) -> tuple[bytes, dict[str, str]]:
    """The body of an infer answer and its extra headers: JSON (`data` flat), or with
    `binary` a JSON header followed by the raw little-endian FP32 logits."""
    logits = output.detach().float().contiguous().numpy()
    out: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": "FP32", "shape": list(logits.shape)}
    resp: dict[str, Any] = {"model_name": model_name, "model_version": MODEL_VERSION,
                            "parameters": parameters, "outputs": [out]}
    if request_id is not None:
        resp["id"] = request_id
    if not binary:
        # orjson writes a float32 array directly (no Python list in between).
        out["data"] = logits.reshape(-1)
        return orjson.dumps(resp, option=orjson.OPT_SERIALIZE_NUMPY), {}
    raw = logits.astype("<f4", copy=False).tobytes()
    out["parameters"] = {"binary_data_size": len(raw)}
    header = orjson.dumps(resp)
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}
