"""What prediction reads of an ONNX file (its metadata, its inputs' and outputs' types and shapes), read straight
from the protocol-buffer encoding.

The ``onnx`` package would parse the same, but importing it takes about a second (it loads ``ml_dtypes``), and
loading a model copies every weight into Python objects; ``wnet-zoo predict`` needs neither, so it reads the few
fields it uses and steps over the rest (the nodes and the weights' bytes), following protobuf's rules for the parts
it reads (unknown fields skipped, a embedded message given twice merged, the last member of a oneof set wins); the
parts it steps over are not checked (ONNX Runtime refuses a broken node when it loads the model). Field numbers are
those of ``onnx.proto`` (ModelProto, GraphProto, ValueInfoProto, TypeProto, TensorShapeProto, TensorProto). Weights
stored as unpacked numbers (rare: exporters write raw bytes) are walked number by number, slowly.
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
    "float8e8m0",
    "uint2",
    "int2",
    "float6e2m3",
    "float6e3m2",
]
_VARINT, _FIXED64, _BYTES, _START_GROUP, _END_GROUP, _FIXED32 = 0, 1, 2, 3, 4, 5
_LAST_FIELD = (1 << 29) - 1  # protobuf's largest field number
_OTHER_TYPES = (4, 5, 7, 8, 9)  # TypeProto's sequence, map, opaque, sparse tensor and optional: a oneof with tensor

# the fields read, by number, with the wire type they have in ONNX's schema (a field with another wire type is an
# unknown one, as protobuf keeps it): ModelProto's graph and metadata_props, GraphProto's initializer, input, output
_MODEL = {7: _BYTES, 14: _BYTES}
_GRAPH = {5: _BYTES, 11: _BYTES, 12: _BYTES}


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
    for number, value in _fields(data, _MODEL):
        if number == 14:
            entry = dict(_strings(value, {1: _BYTES, 2: _BYTES}))
            found.metadata[entry.get(1, "")] = entry.get(2, "")
        elif number == 7:
            _read_graph(value, found)
    return found


def _read_graph(data: memoryview, found: GraphInfo) -> None:
    for number, value in _fields(data, _GRAPH):
        if number == 5:
            found.initializers.add(dict(_strings(value, {8: _BYTES})).get(8, ""))
        else:
            (found.inputs if number == 11 else found.outputs).append(_value_info(value))


def _value_info(data: memoryview) -> TensorInfo:
    info = TensorInfo()
    for number, value in _fields(data, {1: _BYTES, 2: _BYTES}):
        if number == 1:
            info.name = _text(value)
        else:
            _type_proto(value, info)
    return info


def _type_proto(data: memoryview, info: TensorInfo) -> None:
    """A TypeProto into ``info``: its tensor_type (field 1), merged; another type of the oneof clears it."""
    for kind, value in _fields(data, {1: _BYTES, **dict.fromkeys(_OTHER_TYPES, _BYTES)}):
        if kind == 1:
            for part, content in _fields(value, {1: _VARINT, 2: _BYTES}):
                if part == 1:
                    info.elem_type = _signed(content, 32)
                else:
                    info.dims = (info.dims or []) + _dims(content)
        else:
            info.elem_type, info.dims = 0, None


def _dims(data: memoryview) -> list[int | str | None]:
    dims: list[int | str | None] = []
    for _, dimension in _fields(data, {1: _BYTES}):
        declared: int | str | None = None  # dim_value and dim_param are a oneof: the last one set counts
        for kind, value in _fields(dimension, {1: _VARINT, 2: _BYTES}):
            declared = _signed(value, 64) if kind == 1 else (_text(value) or None)
        dims.append(declared)
    return dims


def _strings(data: memoryview, expected: dict[int, int]) -> Iterator[tuple[int, str]]:
    for number, value in _fields(data, expected):
        yield number, _text(value)


def _text(value: int | memoryview) -> str:
    """A string field (protobuf does not check proto2 strings: bytes that are not UTF-8 stay, escaped)."""
    return bytes(value).decode(errors="surrogateescape")  # type: ignore[arg-type]


def _signed(value: int | memoryview, bits: int) -> int:
    """A varint read as a signed integer of ``bits`` (negative numbers are sent as 64-bit two's complement)."""
    assert isinstance(value, int)  # _fields gives varint fields as numbers
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _fields(data: memoryview, expected: dict[int, int]) -> Iterator[tuple[int, int | memoryview]]:
    """Each field of a message whose number is in ``expected`` with the wire type given there: (number, its varint
    value or its bytes); other fields (fixed-width, groups, unknown numbers, another wire type) are stepped over.
    ``NotOnnx`` for what protobuf cannot parse: an invalid wire type or field number, a field past the end."""
    position, end = 0, len(data)
    open_groups: list[int] = []
    while position < end:
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if not 0 < number <= _LAST_FIELD or key >> 32:
            raise NotOnnx(f"field number {number}")
        if wire == _VARINT:
            value, position = _varint(data, position)
            if not open_groups and expected.get(number) == wire:
                yield number, value
        elif wire == _BYTES:
            length, position = _varint(data, position)
            if position + length > end:
                raise NotOnnx("a field runs past the end")
            if not open_groups and expected.get(number) == wire:
                yield number, data[position : position + length]
            position += length
        elif wire in (_FIXED64, _FIXED32):
            position += 8 if wire == _FIXED64 else 4
        elif wire == _START_GROUP:
            open_groups.append(number)
        elif wire == _END_GROUP and open_groups and open_groups[-1] == number:
            open_groups.pop()
        else:
            raise NotOnnx(f"wire type {wire} of field {number}")
    if position > end or open_groups:
        raise NotOnnx("a field runs past the end")


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
