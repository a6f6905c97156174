"""The exported ONNX encoder and the metadata that tell any tool how to feed it.

The graph takes ``raw`` (B, 1, Z, Y, X) float32 min-max scaled over the whole volume (``normalization``
``minmax_0_1``: ``(v - min) / (max - min)``; earlier exports took ``minmax_0_100``, 100 times that) and returns
``probabilities`` (B, K, Z, Y, X), a softmax over K classes. Batch and spatial axes are dynamic; spatial sizes must
be multiples of 8. ``metadata_props`` hold the rest.

The graph is that of :func:`wnet_zoo.export.encoder.inference_encoder` (composed convolutions, group
norms as short reductions), which ONNX Runtime runs as close to float64 as torch does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wnet_zoo.errors import UserError, command
from wnet_zoo.model.architecture import SPATIAL_MULTIPLE
from wnet_zoo.prediction.onnx_graph import ELEMENT_TYPES, NotOnnx, read_graph_info
from wnet_zoo.version import __version__

INPUT_NAME = "raw"
OUTPUT_NAME = "probabilities"
NORMALIZATION = "minmax_0_1"
"""How the graphs wnet-zoo exports take their input."""
INPUT_SCALES = {NORMALIZATION: 1.0, "minmax_0_100": 100.0}
"""The full scale of the input of each normalisation wnet-zoo knows (``minmax_0_100``: earlier exports, and
graphs without wnet-zoo's metadata)."""
_PREFIX = "wnet_zoo."
UNDEFINED, FLOAT = 0, 1  # onnx.TensorProto.DataType


@dataclass
class ModelMetadata:
    """What an exported WNet3D says about itself (stored as ONNX ``metadata_props``, prefixed ``wnet_zoo.``).

    Attributes:
        num_classes: K, the number of output channels.
        foreground_class: the class holding nuclei, when known from training.
        train_patch: the (z, y, x) patch the model was trained on, when known.
        normalization: how inputs are scaled: ``minmax_0_1`` (or ``minmax_0_100``, see ``INPUT_SCALES``).
        spatial_multiple: spatial sizes must be multiples of this.
        name: a model name.
        version: the wnet-zoo version that exported it.
        input_sigma: the (z, y, x) Gaussian sigma in voxels the graph smooths its input with, when it does
            (set by :func:`export_onnx` from the model; informative: the smoothing is in the graph).
        input_log: the offset (0..100 scale) of the logarithm the graph compresses its input with, when it does
            (set by :func:`export_onnx`; informative too).
        input_background: the (z, y, x) box radius in voxels of the background the graph subtracts from its
            input, when it does (set by :func:`export_onnx`; informative too).
        from_wnet_zoo: whether the graph carries these metadata (False: another tool's graph, whose classes
            are read off its output and whose input is assumed to be scaled as ours).
        layout_declared: whether the graph's declared shapes show an output (B, K, Z, Y, X) with K >= 2 and the
            input's own dynamic batch and spatial axes (set by :func:`read_metadata`).
    """

    num_classes: int
    foreground_class: int | None = None
    train_patch: tuple[int, int, int] | None = None
    normalization: str = NORMALIZATION
    spatial_multiple: int = SPATIAL_MULTIPLE
    name: str = "wnet3d"
    version: str = __version__
    input_sigma: tuple[float, float, float] | None = None
    input_log: float | None = None
    input_background: tuple[int, int, int] | None = None
    from_wnet_zoo: bool = True
    layout_declared: bool = False

    def to_props(self) -> dict[str, str]:
        """The metadata as ``metadata_props`` strings; unknown values are left out."""
        props = {
            "num_classes": str(self.num_classes),
            "normalization": self.normalization,
            "spatial_multiple": str(self.spatial_multiple),
            "name": self.name,
            "version": self.version,
        }
        if self.foreground_class is not None:
            props["foreground_class"] = str(self.foreground_class)
        if self.train_patch is not None:
            props["train_patch"] = ",".join(map(str, self.train_patch))
        if self.input_sigma is not None:
            props["input_sigma"] = ",".join(map(repr, self.input_sigma))
        if self.input_log is not None:
            props["input_log"] = repr(self.input_log)
        if self.input_background is not None:
            props["input_background"] = ",".join(map(str, self.input_background))
        return {_PREFIX + key: value for key, value in props.items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMetadata:
        """Parse ``metadata_props``; a graph without ours gets what can be read off its output."""
        ours = {key[len(_PREFIX) :]: value for key, value in props.items() if key.startswith(_PREFIX)}
        patch = ours.get("train_patch")
        sigma = ours.get("input_sigma")
        log = ours.get("input_log")
        background = ours.get("input_background")
        return cls(
            num_classes=int(ours.get("num_classes", 0)),
            foreground_class=int(ours["foreground_class"]) if "foreground_class" in ours else None,
            train_patch=tuple(int(v) for v in patch.split(",")) if patch else None,  # type: ignore[arg-type]
            normalization=ours.get("normalization", "minmax_0_100"),
            spatial_multiple=int(ours.get("spatial_multiple", SPATIAL_MULTIPLE)),
            name=ours.get("name", "wnet3d"),
            version=ours.get("version", "unknown"),
            input_sigma=tuple(float(v) for v in sigma.split(",")) if sigma else None,  # type: ignore[arg-type]
            input_log=float(log) if log else None,
            input_background=tuple(int(v) for v in background.split(",")) if background else None,  # type: ignore[arg-type]
            from_wnet_zoo=bool(ours),
        )


def read_metadata(path: str | Path, shown: str | None = None) -> ModelMetadata:
    """Read an ONNX file's WNet3D metadata, refusing (``UserError``) what is not an ONNX model or what its
    declared shapes and types show cannot segment one grey-level volume: an input other than float32
    (B, 1, Z, Y, X), an output other than float32 (B, K >= 2, Z, Y, X) of the input's batch and spatial size.

    ``shown`` names the model in messages (default: ``path``; a zipped package's name and member).
    """
    path = Path(path)
    shown = shown or str(path)
    try:
        graph = read_graph_info(path)
    except NotOnnx:
        raise UserError(f"{shown}: not an ONNX model; export one with {command('export_model')}") from None
    except OSError as error:
        raise UserError(
            f"{shown}: cannot be read ({error.strerror or error}); check the path and its permissions"
        ) from None
    metadata = ModelMetadata.from_props(graph.metadata)
    ours = metadata.from_wnet_zoo
    inputs = [value for value in graph.inputs if value.name not in graph.initializers]
    if len(inputs) != 1 or len(inputs[0].dims or ()) != 5:
        raise refusal(shown, ours, "the model's input is not 5-D (B, C, Z, Y, X)")
    given = inputs[0]
    if given.elem_type not in (UNDEFINED, FLOAT):
        raise refusal(shown, ours, f"the model's input is {_type_name(given.elem_type)}, not float32")
    in_dims = list(given.dims or ())
    if isinstance(in_dims[1], int) and in_dims[1] != 1:
        raise refusal(shown, ours, f"the model takes {in_dims[1]} input channels, not 1 (one grey-level volume)")
    result = graph.outputs[0] if graph.outputs else None
    if result is not None and result.elem_type not in (UNDEFINED, FLOAT):
        raise refusal(shown, ours, f"the model's output is {_type_name(result.elem_type)}, not float32")
    out_dims = result.dims if result is not None else None
    if out_dims is not None:
        if len(out_dims) != 5:
            raise refusal(shown, ours, f"the model's output is {len(out_dims)}-D, not 5-D (B, K, Z, Y, X)")
        if isinstance(out_dims[1], int) and out_dims[1] < 2:
            raise refusal(shown, ours, one_channel(out_dims[1]))
        for axis in (0, 2, 3, 4):
            if isinstance(in_dims[axis], int) and isinstance(out_dims[axis], int) and in_dims[axis] != out_dims[axis]:
                shapes = f"{_shape(in_dims)} into {_shape(out_dims)}"
                raise refusal(shown, ours, f"the model turns {shapes}; it must keep the batch and spatial size")
        metadata.layout_declared = isinstance(out_dims[1], int) and all(
            isinstance(in_dims[axis], str) and in_dims[axis] == out_dims[axis] for axis in (0, 2, 3, 4)
        )
    if metadata.num_classes == 0 and out_dims is not None and isinstance(out_dims[1], int):
        metadata.num_classes = out_dims[1]
    return metadata


def refusal(shown: str, ours: bool, problem: str) -> UserError:
    """The one-line error for a model that cannot segment: ``problem``, said after the missing metadata of a
    graph wnet-zoo did not export (whose maker most likely meant it for something else)."""
    origin = "" if ours else "no wnet-zoo metadata (not exported by wnet-zoo), and "
    return UserError(f"{shown}: {origin}{problem}; export one with {command('export_model')}")


def one_channel(channels: int) -> str:
    """Why an output of ``channels`` (< 2) channels cannot be used."""
    return f"its output has {channels} channel{'s' * (channels != 1)}, but class probabilities need 2 or more"


def _shape(dims: list[int | str | None]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def _type_name(elem_type: int) -> str:
    return ELEMENT_TYPES[elem_type] if 0 <= elem_type < len(ELEMENT_TYPES) else f"element type {elem_type}"
