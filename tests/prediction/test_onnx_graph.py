"""Reading an ONNX file's metadata and signature without the onnx package: what onnx.load reads, field for field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from wnet_zoo.prediction.onnx_graph import ELEMENT_TYPES, NotOnnx, read_graph_info


def as_onnx_reads_it(path: Path) -> tuple:
    model = onnx.load(str(path), load_external_data=False)

    def value(info: onnx.ValueInfoProto) -> tuple:
        tensor = info.type.tensor_type
        dims = None
        if tensor.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
        return info.name, tensor.elem_type, dims

    return (
        {p.key: p.value for p in model.metadata_props},
        [value(v) for v in model.graph.input],
        [value(v) for v in model.graph.output],
        {t.name for t in model.graph.initializer},
    )


def as_we_read_it(path: Path) -> tuple:
    found = read_graph_info(path)
    values = [[(v.name, v.elem_type, v.dims) for v in side] for side in (found.inputs, found.outputs)]
    return found.metadata, *values, found.initializers


def test_element_type_names_are_onnxs():
    assert [name.lower() for name, _ in sorted(TensorProto.DataType.items(), key=lambda item: item[1])] == ELEMENT_TYPES


def test_the_exported_model_reads_as_onnx_reads_it(tiny_onnx):
    ours = as_we_read_it(tiny_onnx)
    assert ours == as_onnx_reads_it(tiny_onnx)
    assert ours[0]["wnet_zoo.num_classes"] == "2" and ours[3]  # metadata and weights are there


def test_hand_made_graphs_read_as_onnx_reads_them(tmp_path):
    kernel = helper.make_tensor("kernel", TensorProto.FLOAT, [2, 1, 3, 3, 3], np.zeros(54, np.float32).tolist())
    graphs = {
        "dynamic": ([("raw", TensorProto.FLOAT, ["b", 1, "z", -1, 0])], [("out", TensorProto.INT64, None)]),
        "no shape": ([("raw", TensorProto.UNDEFINED, None)], [("out", TensorProto.FLOAT16, [])]),
        "two inputs": ([("a", TensorProto.FLOAT, [1]), ("kernel", TensorProto.FLOAT, [2, 1, 3, 3, 3])], []),
    }
    for name, (inputs, outputs) in graphs.items():
        graph = helper.make_graph(
            [helper.make_node("Identity", [inputs[0][0]], [outputs[0][0] if outputs else "y"])],
            name,
            [helper.make_tensor_value_info(*value) for value in inputs],
            [helper.make_tensor_value_info(*value) for value in outputs],
            initializer=[kernel],
        )
        model = helper.make_model(graph)
        helper.set_model_props(model, {"wnet_zoo.name": name, "other": "é"})
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, str(path))
        assert as_we_read_it(path) == as_onnx_reads_it(path), name
    # what protobuf allows and exporters rarely write: another type of TypeProto's oneof after a tensor type, an
    # unnamed initializer, a metadata value that is not UTF-8, a known field with another wire type (kept unknown)
    graph = helper.make_graph([], "odd", [], [], initializer=[kernel])
    graph.initializer[0].name = ""
    model = helper.make_model(graph)
    helper.set_model_props(model, {"author": "x"})
    encoded = model.SerializeToString().replace(b"\x01x", "\x01é".encode("latin-1"))
    odd = tmp_path / "odd.onnx"
    tensor = helper.make_tensor_value_info("a", TensorProto.FLOAT, [3]).SerializeToString()
    sequence = helper.make_tensor_sequence_value_info("a", TensorProto.FLOAT, [3]).SerializeToString()
    given_twice = tensor + sequence  # one input, its type given twice: the sequence replaces the tensor
    graph_part = bytes([0x5A, len(given_twice)]) + given_twice  # GraphProto.input (11), length-delimited
    encoded += bytes([0x3A, len(graph_part)]) + graph_part  # ModelProto.graph (7) again: merged into the first
    odd.write_bytes(encoded + b"\x70\x05" + b"\x1b\x08\x01\x1c")  # metadata_props as a number; a group, field 3
    assert as_we_read_it(odd)[1:] == as_onnx_reads_it(odd)[1:] == ([("a", 0, None)], [], {""})
    assert as_we_read_it(odd)[0] == {"author": b"\xe9".decode(errors="surrogateescape")}
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert as_we_read_it(empty) == as_onnx_reads_it(empty) == ({}, [], [], set())


@pytest.mark.parametrize(
    "content",
    [
        b"II*\x00" + bytes(range(256)) * 8,  # a TIFF's header, then anything
        b"not a model",
        b"\x3a\xff\xff\xff\x0f",  # the graph field, longer than the file
        b"\x08",  # a number cut short
        b"\x3b\x00",  # the graph with a wire type protobuf never writes
    ],
)
def test_what_onnx_refuses_is_refused(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(Exception):  # noqa: B017 - whichever protobuf's error
        onnx.load(str(path))
    with pytest.raises(NotOnnx):
        read_graph_info(path)


def test_an_unreadable_model_is_one_line_naming_it(tmp_path):
    from wnet_zoo.errors import UserError
    from wnet_zoo.prediction.metadata import read_metadata

    with pytest.raises(UserError, match=r"folder: cannot be read \(Is a directory\)"):
        read_metadata(tmp_path, "folder")
