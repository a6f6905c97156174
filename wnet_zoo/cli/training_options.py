"""The options ``train`` and ``finetune`` share, and the :class:`~wnet_zoo.training.config.TrainConfig` they build."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

from wnet_zoo.cli.naming import OFF_FLAGS
from wnet_zoo.errors import UserError
from wnet_zoo.training.config import TrainConfig, read_config_file

_DEFAULTS = TrainConfig()


def _csv_ints(value: str | None, name: str) -> list[int] | None:
    if value is None or isinstance(value, list):
        return value
    try:
        return [int(part) for part in str(value).split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--{name} {value!r}: give comma-separated integers, e.g. 64,128,256,512") from None


NOT_OPTIONS = ("images", "base_lr", "lr_factor", "from_weights")
"""Fields that are not options of their own: the images are arguments; fine-tuning sets the rest."""
_TYPES = {"int": int, "int | None": int, "float": float, "float | None": float}


def training_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of every training parameter, shared by the commands that train: one per field of
    :class:`~wnet_zoo.training.config.TrainConfig`, with its default, help text, choices and metavar."""
    options = [
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False),
            help="YAML file with any of these options (keys as option names); the command line wins.",
        )
    ]
    options += [_option(field) for field in dataclasses.fields(TrainConfig) if field.name not in NOT_OPTIONS]
    for option in reversed(options):
        command = option(command)
    return command


def _option(field: dataclasses.Field[Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The option of one config field."""
    flag = field.name.replace("_", "-")
    default = getattr(_DEFAULTS, field.name)
    settings: dict[str, Any] = {"help": field.metadata["help"], "show_default": default is not None}
    if "metavar" in field.metadata:
        settings["metavar"] = field.metadata["metavar"]
    if field.type in ("bool", "bool | None"):
        if default is False:  # an opt-in switch
            return click.option(f"--{flag}", is_flag=True, **settings)
        off = OFF_FLAGS.get(field.name, f"no-{flag}")
        return click.option(f"--{flag}/--{off}", default=default, **settings)
    if "choices" in field.metadata:
        settings["type"] = click.Choice(field.metadata["choices"])
    elif field.type in _TYPES:
        settings["type"] = _TYPES[field.type]
    if isinstance(default, list):  # typed as text (z,y,x or comma-separated), checked by config_from_options
        default = ",".join(map(str, default))
    return click.option(f"--{flag}", default=default, **settings)


def config_from_options(ctx: click.Context, images: tuple[str, ...], options: dict[str, Any]) -> TrainConfig:
    """Merge a ``--config`` file with the options the user typed (typed options win)."""
    from wnet_zoo.triples import parse_triple

    values: dict[str, Any] = {}
    config_file = options.pop("config_file", None)
    if config_file:
        values.update({str(k).replace("-", "_"): v for k, v in read_config_file(config_file).items()})
    for name, value in options.items():
        typed = ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
        if name not in values or typed:
            values[name] = value
        # a typed option's mistake is named as the option; a config file's by the file and key (from_dict)
        if typed and name == "channels":
            values[name] = _csv_ints(value, name)
        if typed and name == "patch":
            parse_triple(value, name)
    if images:
        values["images"] = list(images)
    return TrainConfig.from_dict(values, source=config_file or "options")
