"""Training configuration: one dataclass, saved to and read from plain YAML keyed by option names."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wnet_zoo.errors import UserError, setting
from wnet_zoo.io.atomic import write_text
from wnet_zoo.model.architecture import DEFAULT_CHANNELS

DEFAULT_LR_FACTOR = 0.1  # fine-tuning's learning rate, as a factor of the training default


@dataclass(frozen=True)
class TrainConfig:
    """Every training parameter. The loss's defaults are those of CellSeg3D's WNet3D training page; the schedule's
    (``lr``, ``epochs``, ``bf16``, ``stop_at_plateau``) let a run from scratch end by itself within 20 minutes on
    2 CPU cores (CellSeg3D's 2e-5 barely moves the SoftNCut loss in that time). ``bf16`` None: bf16 autocast
    where the hardware computes it natively.

    Keys on disk and on the command line are the field names with ``-`` for ``_`` (``--ncut-weight``); each
    field's ``metadata`` holds the help text (and choices, metavar) the command line shows for it.
    A config is never changed: the training functions record what they resolve in a copy
    (:func:`dataclasses.replace`).
    ``lr`` is the rate training starts at; ``base_lr`` the rate it derives from (``lr = base_lr * lr_factor``
    when fine-tuning, ``base_lr = lr`` otherwise); ``from_weights`` names the pretrained source of a fine-tuning run.
    The fields from ``screen`` on configure the training checks (see :mod:`wnet_zoo.training.checks.coordinator`).
    ``input_smoothing`` is the Gaussian sigma (voxels along the finest axis) the model smooths its input with;
    None: chosen from the images at the start (see
    :func:`wnet_zoo.training.input_choices.auto_input_smoothing`), and recorded.
    ``input_log`` is the offset (0..100 scale) of the logarithm the model compresses its input with, before any
    smoothing; None: chosen from the images (see :func:`wnet_zoo.training.input_choices.auto_input_log`), and recorded.
    ``input_background`` is the radius (voxels along the finest axis) of the box whose opening the model subtracts
    from its input as background; None: chosen from the images (see
    :func:`wnet_zoo.training.input_choices.auto_input_background`), and recorded.
    """

    images: list[str] = field(default_factory=list)
    channel: int | None = field(default=None, metadata={"help": "Channel of 4-D (C, Z, Y, X) stacks to train on."})
    num_classes: int = field(default=2, metadata={"help": "K, the classes the encoder segments into."})
    rec_loss: str = field(
        default="mse", metadata={"help": "Reconstruction loss of the decoder.", "choices": ("mse", "bce")}
    )
    intensity_sigma: float = field(default=1.0, metadata={"help": "SoftNCut intensity sigma."})
    spatial_sigma: float = field(default=4.0, metadata={"help": "SoftNCut spatial sigma (voxels)."})
    radius: int = field(default=2, metadata={"help": "SoftNCut neighbourhood radius (voxels)."})
    ncut_weight: float = field(default=0.5, metadata={"help": "Weight of the SoftNCut loss."})
    rec_weight: float = field(default=5e-3, metadata={"help": "Weight of the reconstruction loss."})
    input_smoothing: float | None = field(
        default=None,
        metadata={
            "help": (
                "Gaussian sigma (voxels along the finest axis) the model smooths its input with, in training and "
                "in every export. Default: 1 for noisy stacks (voxel-to-voxel noise of at least 4 on the 0..100 "
                "scale, measured after any input compression), 2 from a noise of 8, up to 4; else 0 (off, as in "
                "CellSeg3D)."
            ),
            "metavar": "SIGMA",
        },
    )
    input_log: float | None = field(
        default=None,
        metadata={
            "help": (
                "Compress the model's input (0..100) with 100*log(1+x/OFFSET)/log(1+100/OFFSET), in training and "
                "in every export. Default: the image's median when its nuclei differ widely in brightness (the 95th "
                "percentile of their brightness above background at least 2.5x the 25th: dim nuclei beside bright "
                "or over-exposed ones, uneven illumination), else 0 (off, as in CellSeg3D)."
            ),
            "metavar": "OFFSET",
        },
    )
    input_background: int | None = field(
        default=None,
        metadata={
            "help": (
                "Subtract the background of the model's input: its grey-level opening by a box of 2*RADIUS+1 "
                "voxels (along the finest axis), in training and in every export. Default: on where the background "
                "varies by at least 0.7x the nuclei's contrast (autofluorescence, cytoplasm, uneven haze), with a "
                "radius just above the nuclei's (2 to 8 voxels); else 0 (off, as in CellSeg3D)."
            ),
            "metavar": "RADIUS",
        },
    )
    epochs: int = field(default=12, metadata={"help": "Epochs to train."})
    patch: list[int] | None = field(
        default=None,
        metadata={
            "help": "Patch size, one size or z,y,x (multiples of 8). Default: 64, clipped to the smallest volume."
        },
    )
    samples_per_epoch: int = field(default=8, metadata={"help": "Random patches per volume in one epoch."})
    batch: int = field(default=2, metadata={"help": "Patches per step."})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate."})
    base_lr: float | None = None
    lr_factor: float = 1.0
    from_weights: str | None = None
    weight_decay: float = field(default=0.01, metadata={"help": "Adam weight decay."})
    channels: list[int] = field(
        default_factory=lambda: list(DEFAULT_CHANNELS),
        metadata={"help": "Widths of the four U-Net levels, comma-separated (tiny models: 4,8,16,32)."},
    )
    dropout: float = field(default=0.65, metadata={"help": "Dropout probability."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    device: str = field(default="auto", metadata={"help": "Where to train.", "choices": ("auto", "cpu", "cuda")})
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bfloat16 autocast. Default: where the CPU (AVX512-BF16, AMX) or GPU computes it natively."},
    )
    screen: bool = field(
        default=True,
        metadata={"help": "Screen volumes and patches: over-exposure, (almost) empty content, low contrast."},
    )
    skip_empty_patches: bool = field(
        default=True, metadata={"help": "Replace almost-empty patches by ones with foreground."}
    )
    contrast_jitter: float = field(
        default=0.0,
        metadata={
            "help": (
                "Lower the contrast of half the training patches at random: blend each with a uniform grey (0..50 "
                "of 0..100), keeping a share log-uniform in [1-J, 1]. For pretraining on varied stacks; 0: off."
            ),
            "metavar": "J",
        },
    )
    min_foreground: float = field(
        default=1e-3, metadata={"help": "Share of foreground voxels below which a patch is almost empty."}
    )
    plateau_window: int = field(
        default=3, metadata={"help": "Epochs of the SoftNCut moving mean for plateau detection (0: off)."}
    )
    plateau_tolerance: float = field(
        default=0.01, metadata={"help": "Fall of that mean between two windows below which the loss has plateaued."}
    )
    stop_at_plateau: bool = field(
        default=True,
        metadata={"help": "End training when the SoftNCut loss plateaus (best.pt: the lowest total loss)."},
    )
    explosion_guard: bool = field(
        default=True, metadata={"help": "Roll back and halve the learning rate when a loss explodes."}
    )
    max_explosions: int = field(
        default=3, metadata={"help": "Explosions in a row after which training stops (exit code 1)."}
    )
    balance_check: bool = field(
        default=True, metadata={"help": "Measure the loss terms' shares; advise at a plateau when NCut takes over."}
    )
    auto_balance: bool = field(
        default=False, metadata={"help": "Raise the reconstruction weight when NCut takes over."}
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain data, keyed by option names."""
        return {name.replace("_", "-"): value for name, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from plain data keyed by option names (``-`` or ``_``); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {}
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0].replace('_', '-')!r}?" if close else "keys are the option names"
                raise UserError(f"{source}: unknown key {key!r}; {hint}")
            values[name] = _coerce(name, value, source)
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ``UserError`` for values that cannot train."""
        checks = [
            (self.num_classes >= 2, f"{setting('num_classes')} must be at least 2"),
            (self.rec_loss in ("mse", "bce"), f"{setting('rec_loss')} must be mse or bce"),
            (
                self.intensity_sigma > 0 and self.spatial_sigma > 0,
                f"{setting('intensity_sigma')} and {setting('spatial_sigma')} must be > 0",
            ),
            (int(self.radius) == self.radius and self.radius >= 1, f"{setting('radius')} must be a whole number >= 1"),
            (
                self.input_smoothing is None or 0 <= self.input_smoothing <= 8,
                f"{setting('input_smoothing')} must be a sigma in [0, 8] voxels, e.g. 1 (0: off)",
            ),
            (
                self.input_log is None or 0 <= self.input_log <= 100,
                f"{setting('input_log')} must be an offset in [0, 100] on the 0..100 scale, e.g. 1 (0: off)",
            ),
            (
                self.input_background is None
                or (int(self.input_background) == self.input_background and 0 <= self.input_background <= 16),
                f"{setting('input_background')} must be a whole radius in [0, 16] voxels, e.g. 4 (0: off)",
            ),
            (
                self.ncut_weight >= 0 and self.rec_weight >= 0,
                f"{setting('ncut_weight')} and {setting('rec_weight')} must be >= 0",
            ),
            (self.epochs >= 1, f"{setting('epochs')} must be at least 1"),
            (
                self.samples_per_epoch >= 1 and self.batch >= 1,
                f"{setting('samples_per_epoch')} and {setting('batch')} must be at least 1",
            ),
            (self.lr > 0 and self.lr_factor > 0, f"{setting('lr')} and {setting('lr_factor')} must be > 0"),
            (0 <= self.dropout < 1, f"{setting('dropout')} must be in [0, 1)"),
            (self.device in ("auto", "cpu", "cuda"), f"{setting('device')} must be auto, cpu or cuda"),
            (
                len(self.channels) == 4 and all(c > 0 and c % 4 == 0 for c in self.channels),
                f"{setting('channels')} must be 4 positive multiples of 4, e.g. 64,128,256,512",
            ),
            (
                0 <= self.contrast_jitter < 1,
                f"{setting('contrast_jitter')} must be in [0, 1), e.g. 0.75 (0: off)",
            ),
            (0 <= self.min_foreground < 1, f"{setting('min_foreground')} must be in [0, 1), e.g. 0.001"),
            (
                self.plateau_window >= 0 and self.plateau_tolerance > 0,
                f"{setting('plateau_window')} must be >= 0 (0: off) and {setting('plateau_tolerance')} > 0",
            ),
            (self.max_explosions >= 1, f"{setting('max_explosions')} must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict keyed by option names."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must hold a mapping of option names to values")
    return data


def write_config_file(config: TrainConfig, path: Path) -> None:
    """Write the full resolved config as YAML (to a temporary name, then renamed)."""
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def _coerce(name: str, value: Any, source: str) -> Any:
    """``value`` as the type of field ``name``, accepting what its option accepts (``patch: 32`` as ``--patch 32``,
    ``channels: "4,8,16,32"`` as ``--channels 4,8,16,32``; YAML reads ``1e-4`` as text, for one); a clear error
    otherwise."""
    if value is None:
        return None
    kind = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}[name]
    try:
        if kind.startswith("bool"):
            if not isinstance(value, bool):
                raise ValueError
            return value
        if isinstance(value, bool):  # YAML's true / false are no numbers, sizes or names
            raise ValueError
        if kind.startswith("int"):
            return _integer(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("list[int]"):
            if isinstance(value, str):
                items: list[Any] = [item for item in value.replace("x", ",").split(",") if item.strip()]
            else:
                items = [value] if isinstance(value, int) else list(value)
            if not items or any(isinstance(item, bool) for item in items):
                raise ValueError
            return [_integer(item) for item in items]
        if kind.startswith("list[str]"):
            return [str(item) for item in ([value] if isinstance(value, str) else value)]
        return str(value)
    except (TypeError, ValueError):
        raise UserError(
            f"{source}: {name.replace('_', '-')}: expected {_EXPECTED.get(name, kind.split(' |')[0])}, got {value!r}"
        ) from None


def _integer(value: Any) -> int:
    """``value`` as an int: an integer or a whole number (``"12"``, ``12.0``, ``"1e3"``); ValueError otherwise."""
    number = float(value)
    if not number.is_integer():
        raise ValueError
    return int(number)


_EXPECTED = {  # what a value of a field must be, by field name, else by type
    "patch": "one size or z,y,x, e.g. 64 or 32,64,64",
    "channels": "comma-separated integers, e.g. 64,128,256,512",
    "images": "a path or a list of paths",
}
