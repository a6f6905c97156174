"""What prediction reads of an ONNX file (its metadata, its inputs' and outputs' types and shapes), read straight
from the protocol-buffer encoding.

The ``onnx`` package would parse the same, but importing it takes about a second (it loads ``ml_dtypes``), and
loading a model copies every weight into Python objects; ``wnet-zoo predict`` needs neither, so it reads the few
fields it uses and steps over the rest (the nodes and the weights' bytes). Field numbers are those
of ``onnx.proto`` (ModelProto, GraphProto, ValueInfoProto, TypeProto, TensorShapeProto, TensorProto).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# onnx.TensorProto.DataType: the names messages give
ELEMENT_TYPES = [
    "undefined",
    "float",
    "uint8",
    "int8",
    "uint16",
    "int16",
    "int32",
    "int64",
    "string",
    "bool",
    "float16",
    "double",
    "uint32",
    "uint64",
    "complex64",
    "complex128",
    "bfloat16",
    "float8e4m3fn",
    "float8e4m3fnuz",
    "float8e5m2",
    "float8e5m2fnuz",
    "uint4",
    "int4",
    "float4e2m1",
]
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5

# (message, field number) -> the wire type it must have: a file that breaks one is not an ONNX model
_MODEL = {1: _VARINT, 2: _BYTES, 3: _BYTES, 4: _BYTES, 5: _VARINT, 6: _BYTES, 7: _BYTES, 8: _BYTES, 14: _BYTES}
_GRAPH = {1: _BYTES, 2: _BYTES, 5: _BYTES, 10: _BYTES, 11: _BYTES, 12: _BYTES, 13: _BYTES}


class NotOnnx(ValueError):
    """The bytes are not a protocol-buffer encoding of an ONNX model."""


@dataclass
class TensorInfo:
    """A graph input or output: its element type (``onnx.TensorProto.DataType``: 0 undefined, 1 float32) and its
    declared dimensions (a number, a dynamic axis's name, or None when not declared; ``dims`` is None when the
    value declares no shape at all)."""

    name: str = ""
    elem_type: int = 0
    dims: list[int | str | None] | None = None


@dataclass
class GraphInfo:
    """The parts of an ONNX model that prediction checks: its metadata and its graph's inputs, outputs and
    initializer names (older exporters list initializers among the inputs too)."""

    metadata: dict[str, str] = field(default_factory=dict)
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    initializers: set[str] = field(default_factory=set)


def read_graph_info(path: str | Path) -> GraphInfo:
    """Read :class:`GraphInfo` from an ONNX file; ``NotOnnx`` when its bytes are not a protocol-buffer message of
    ONNX's shape (what ``onnx.load`` refuses)."""
    found = GraphInfo()
    data = memoryview(Path(path).read_bytes())
    try:
        for number, value in _fields(data, _MODEL):
            if number == 14:
                entry = dict(_strings(value, {1: _BYTES, 2: _BYTES}))
                found.metadata[entry.get(1, "")] = entry.get(2, "")
            elif number == 7:
                _read_graph(value, found)
    except UnicodeDecodeError as error:
        raise NotOnnx(str(error)) from None
    return found


def _read_graph(data: memoryview, found: GraphInfo) -> None:
    for number, value in _fields(data, _GRAPH):
        if number == 5:
            name = dict(_strings(value, {8: _BYTES})).get(8)
            if name is not None:
                found.initializers.add(name)
        elif number in (11, 12):
            (found.inputs if number == 11 else found.outputs).append(_value_info(value))


def _value_info(data: memoryview) -> TensorInfo:
    info = TensorInfo()
    for number, value in _fields(data, {1: _BYTES, 2: _BYTES}):
        if number == 1:
            info.name = bytes(value).decode()
        elif number == 2:  # TypeProto: tensor_type is field 1
            for kind, tensor in _fields(value, {1: _BYTES}):
                if kind == 1:
                    for part, content in _fields(tensor, {1: _VARINT, 2: _BYTES}):
                        if part == 1:
                            info.elem_type = _signed(content, 32)
                        elif part == 2:
                            info.dims = (info.dims or []) + _dims(content)
    return info


def _dims(data: memoryview) -> list[int | str | None]:
    dims: list[int | str | None] = []
    for number, dimension in _fields(data, {1: _BYTES}):
        if number == 1:
            declared: int | str | None = None  # dim_value and dim_param are a oneof: the last one set counts
            for kind, value in _fields(dimension, {1: _VARINT, 2: _BYTES}):
                if kind == 1:
                    declared = _signed(value, 64)
                elif kind == 2:
                    declared = bytes(value).decode() or None
            dims.append(declared)
    return dims


def _strings(data: memoryview, expected: dict[int, int]) -> Iterator[tuple[int, str]]:
    for number, value in _fields(data, expected):
        if number in expected and isinstance(value, memoryview):
            yield number, bytes(value).decode()


def _signed(value: int | memoryview, bits: int) -> int:
    """A varint read as a signed integer of ``bits`` (negative numbers are sent as 64-bit two's complement)."""
    assert isinstance(value, int)
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _fields(data: memoryview, expected: dict[int, int]) -> Iterator[tuple[int, int | memoryview]]:
    """Each field of a message: (number, varint value or the bytes of a length-delimited one); fixed-width fields
    are stepped over. ``NotOnnx`` for a field whose wire type is not the one ``expected`` for its number, or one
    that runs past the end."""
    position, end = 0, len(data)
    while position < end:
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if number == 0 or (number in expected and expected[number] != wire):
            raise NotOnnx(f"field {number} has wire type {wire}")
        if wire == _VARINT:
            value, position = _varint(data, position)
            yield number, value
        elif wire == _BYTES:
            length, position = _varint(data, position)
            if position + length > end:
                raise NotOnnx("a field runs past the end")
            yield number, data[position : position + length]
            position += length
        elif wire in (_FIXED64, _FIXED32):
            position += 8 if wire == _FIXED64 else 4
            if position > end:
                raise NotOnnx("a field runs past the end")
        else:
            raise NotOnnx(f"wire type {wire}")


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if position >= len(data) or shift > 63:
            raise NotOnnx("a number runs past the end")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
