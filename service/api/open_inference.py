"""Open Inference Protocol (KServe v2) codec: parse infer requests, build replies.

Tensors travel as JSON arrays or, with the binary tensor data extension (the official
client's default), as little-endian bytes after the JSON header, whose length the
``Inference-Header-Content-Length`` header gives. The one input, ``input``, is FP32 of
shape [N, C, H, W] with values in [0, 1]; the outputs are ``probabilities`` (FP32 [N, K])
and ``label`` (INT64 [N]), each as JSON or, when asked for (``binary_data`` on the output
or ``binary_data_output`` on the request), as bytes. Anything else is refused with 422
(400 when the header is not JSON at all).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.errors import InvalidJson, InvalidRequest, InvalidTensor
from service.inference.classifier import Classifier

INPUT_NAME = "input"
OUTPUT_NAMES = ("probabilities", "label")
PLATFORM = "pytorch"
EXTENSIONS = ("binary_tensor_data",)
HEADER_LENGTH = "Inference-Header-Content-Length"
_WIRE_TYPES = {"FP32": np.dtype("<f4"), "INT64": np.dtype("<i8")}


class _TensorIn(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str = Field(max_length=256)
    shape: list[int] = Field(max_length=16)
    datatype: str = Field(max_length=16)
    data: Any = None
    parameters: dict[str, Any] | None = None


class _OutputIn(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str = Field(max_length=256)
    parameters: dict[str, Any] | None = None


class _RequestIn(BaseModel):
    model_config = ConfigDict(strict=True)

    id: str | None = Field(None, max_length=256)
    parameters: dict[str, Any] | None = None
    inputs: list[_TensorIn] = Field(min_length=1, max_length=16)
    outputs: list[_OutputIn] | None = Field(None, max_length=16)


@dataclass(frozen=True)
class InferCall:
    rows: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    outputs: tuple[str, ...]
    request_id: str | None
    binary_outputs: frozenset[str] = frozenset()


def model_version(classifier: Classifier) -> str:
    return classifier.manifest.weights_sha256[:12] or "1"


def model_metadata(classifier: Classifier) -> dict[str, Any]:
    channels, height, width = classifier.input_shape
    return {
        "name": classifier.name,
        "versions": [model_version(classifier)],
        "platform": PLATFORM,
        "inputs": [
            {"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, channels, height, width]}
        ],
        "outputs": [
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [-1, len(classifier.class_names)],
            },
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ],
    }


def parse_infer_request(
    body: bytes, input_shape: tuple[int, ...], max_rows: int, header_length: int | None = None
) -> InferCall:
    """Validate an infer request; runs off the event loop (bodies can be megabytes).

    ``header_length`` is the ``Inference-Header-Content-Length``: the JSON header's size,
    binary tensor data following it; None when the whole body is JSON."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise InvalidRequest(
            f"{HEADER_LENGTH} {header_length} with a {len(body)}-byte body",
            message=f"{HEADER_LENGTH} must lie between 1 and the body's length",
        )
    header, binary = (body, b"") if header_length is None else _split(body, header_length)
    request = _request(header)
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT_NAME:
        names = [tensor.name for tensor in request.inputs]
        raise InvalidRequest(
            f"inputs {names}", message=f"expected exactly one input {INPUT_NAME!r}"
        )
    rows = _rows(request.inputs[0], tuple(input_shape), max_rows, binary)
    wanted = tuple(o.name for o in request.outputs) if request.outputs else OUTPUT_NAMES
    unknown = sorted(set(wanted) - set(OUTPUT_NAMES))
    if unknown:
        raise InvalidRequest(
            f"outputs {unknown}", message=f"unknown outputs {unknown}; known: {list(OUTPUT_NAMES)}"
        )
    return InferCall(rows, wanted, request.id, _binary_outputs(request, wanted))


def _split(body: bytes, header_length: int) -> tuple[bytes, bytes]:
    return body[:header_length], body[header_length:]


def _request(header: bytes) -> _RequestIn:
    try:
        raw = json.loads(header)
    except (ValueError, RecursionError) as exc:
        raise InvalidJson(f"infer body: {type(exc).__name__}: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidRequest("infer body must be a JSON object", message="body must be an object")
    try:
        return _RequestIn.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(str(exc), message=f"invalid {where}: {first['msg']}") from None


def _binary_outputs(request: _RequestIn, wanted: tuple[str, ...]) -> frozenset[str]:
    everything = (request.parameters or {}).get("binary_data_output") is True
    asked = {o.name for o in request.outputs or () if (o.parameters or {}).get("binary_data")}
    return frozenset(name for name in wanted if everything or name in asked)


def _rows(
    tensor: _TensorIn, input_shape: tuple[int, ...], max_rows: int, binary: bytes
) -> torch.Tensor:
    def refuse(why: str) -> InvalidTensor:
        return InvalidTensor(why, message=f"input {INPUT_NAME!r}: {why}")

    if tensor.datatype != "FP32":
        raise refuse(f"datatype must be FP32, got {tensor.datatype!r}")
    shape = list(tensor.shape)
    if len(shape) != 4 or tuple(shape[1:]) != input_shape:
        raise refuse(f"shape must be [N, {', '.join(map(str, input_shape))}], got {shape}")
    if not 1 <= shape[0] <= max_rows:
        raise refuse(f"batch size must be between 1 and {max_rows}, got {shape[0]}")
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None or binary:
        values = _binary_values(tensor, size, binary, shape, refuse)
    else:
        values = _json_values(tensor, shape, refuse)
    if not np.isfinite(values).all():
        raise refuse("data contains NaN or infinity")
    if values.min() < 0.0 or values.max() > 1.0:
        raise refuse("values must lie in [0, 1]")
    return torch.from_numpy(values.astype(np.float32))


def _binary_values(tensor: _TensorIn, size: Any, binary: bytes, shape: list[int], refuse):
    expected = math.prod(shape) * _WIRE_TYPES["FP32"].itemsize
    if tensor.data is not None:
        raise refuse("data and binary_data_size are mutually exclusive")
    if type(size) is not int or size != expected:
        raise refuse(f"binary_data_size must be {expected} for shape {shape}, got {size!r}")
    if len(binary) != size:
        raise refuse(f"{len(binary)} bytes of binary data follow the header, expected {size}")
    return np.frombuffer(binary, dtype=_WIRE_TYPES["FP32"]).astype(np.float64).reshape(shape)


def _json_values(tensor: _TensorIn, shape: list[int], refuse) -> np.ndarray:
    if not isinstance(tensor.data, list):
        raise refuse("data must be a JSON array (or binary_data_size with binary data)")
    try:
        array = np.asarray(tensor.data)
    except (ValueError, TypeError, RecursionError):
        raise refuse("data is a ragged or malformed array") from None
    if array.dtype.kind not in "fiu" or not _only_numbers(tensor.data, array.ndim):
        raise refuse("data must hold only numbers (no strings, booleans or nulls)")
    if array.size != math.prod(shape) or (array.ndim != 1 and list(array.shape) != shape):
        raise refuse(f"data has {array.size} values in shape {list(array.shape)}, shape is {shape}")
    return array.astype(np.float64).reshape(shape)


def _only_numbers(data: list, depth: int) -> bool:
    # numpy quietly turns true/false into 1.0/0.0 next to floats; JSON booleans are not FP32.
    leaves = data
    for _ in range(depth - 1):
        leaves = list(itertools.chain.from_iterable(leaves))
    return set(map(type, leaves)) <= {int, float}


def infer_response(
    classifier: Classifier, call: InferCall, probabilities: torch.Tensor
) -> tuple[dict[str, Any], bytes]:
    """The JSON reply, and the binary tensor data to send after it (empty for all-JSON)."""
    tensors = {
        "probabilities": ("FP32", probabilities.numpy()),
        "label": ("INT64", torch.argmax(probabilities, dim=1).numpy()),
    }
    outputs, binary = [], []
    for name in call.outputs:
        datatype, values = tensors[name]
        output: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(values.shape)}
        if name in call.binary_outputs:
            raw = values.astype(_WIRE_TYPES[datatype]).tobytes()
            output["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            output["data"] = values.reshape(-1).tolist()
        outputs.append(output)
    body: dict[str, Any] = {
        "model_name": classifier.name,
        "model_version": model_version(classifier),
        "outputs": outputs,
    }
    if call.request_id is not None:
        body["id"] = call.request_id
    return body, b"".join(binary)
