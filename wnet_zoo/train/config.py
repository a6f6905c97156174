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


@dataclass(frozen=True)
class TrainConfig:
    """Every training parameter. The loss's defaults are those of CellSeg3D's WNet3D training page; the schedule's
    (``lr``, ``epochs``, ``bf16``, ``stop_at_plateau``) let a run from scratch end by itself within 20 minutes on
    2 CPU cores (CellSeg3D's 2e-5 barely moves the SoftNCut loss in that time). ``bf16`` None: bf16 autocast
    where the hardware computes it natively.

    Keys on disk and on the command line are the field names with ``-`` for ``_`` (``--ncut-weight``).
    A config is never changed: the training functions record what they resolve in a copy
    (:func:`dataclasses.replace`).
    ``lr`` is the rate training starts at; ``base_lr`` the rate it derives from (``lr = base_lr * lr_factor``
    when fine-tuning, ``base_lr = lr`` otherwise); ``from_weights`` names the pretrained source of a fine-tuning run.
    The fields from ``screen`` on configure the training checks (see :mod:`wnet_zoo.train.checks.coordinator`).
    ``input_smoothing`` is the Gaussian sigma (voxels along the finest axis) the model smooths its input with;
    None: chosen from the images at the start (see
    :func:`wnet_zoo.train.input_choices.auto_input_smoothing`), and recorded.
    ``input_log`` is the offset (0..100 scale) of the logarithm the model compresses its input with, before any
    smoothing; None: chosen from the images (see :func:`wnet_zoo.train.input_choices.auto_input_log`), and recorded.
    """

    images: list[str] = field(default_factory=list)
    channel: int | None = None
    num_classes: int = 2
    rec_loss: str = "mse"
    intensity_sigma: float = 1.0
    spatial_sigma: float = 4.0
    radius: int = 2
    ncut_weight: float = 0.5
    rec_weight: float = 5e-3
    input_smoothing: float | None = None
    input_log: float | None = None
    epochs: int = 12
    patch: list[int] | None = None
    samples_per_epoch: int = 8
    batch: int = 2
    lr: float = 1e-3
    base_lr: float | None = None
    lr_factor: float = 1.0
    from_weights: str | None = None
    weight_decay: float = 0.01
    channels: list[int] = field(default_factory=lambda: list(DEFAULT_CHANNELS))
    dropout: float = 0.65
    seed: int = 0
    device: str = "auto"
    bf16: bool | None = None
    screen: bool = True
    skip_empty_patches: bool = True
    min_foreground: float = 1e-3
    plateau_window: int = 3
    plateau_tolerance: float = 0.01
    stop_at_plateau: bool = True
    explosion_guard: bool = True
    max_explosions: int = 3
    balance_check: bool = True
    auto_balance: bool = False

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
