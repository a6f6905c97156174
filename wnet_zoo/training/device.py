"""The training device, whether it trains in bf16, and its float32 arithmetic."""

from __future__ import annotations

import logging

import torch

from wnet_zoo.errors import UserError, setting

LOG = logging.getLogger("wnet_zoo")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"{setting('device', 'cuda')}: PyTorch sees no CUDA GPU here; use {setting('device', 'cpu')} "
            "or install a CUDA build of torch"
        )
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively (AVX512-BF16/AMX CPUs, Ampere+ GPUs)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_bf16(requested: bool | None, device: torch.device) -> bool:
    """Whether training uses bf16 autocast: where ``device`` computes it natively, unless ``requested`` is False;
    ``requested`` True on a device without it trains in float32, with a warning."""
    supported = bf16_supported(device)
    if requested and not supported:
        LOG.warning(
            "%s: this %s has no native bf16 support; training in float32", setting("bf16", True), device.type.upper()
        )
    return supported and requested is not False


def flush_denormals() -> None:
    """From now on, this process's PyTorch CPU arithmetic flushes denormal floats (below 1.2e-38) to zero.

    A fine-tuned model's gradients and Adam moments are small enough that float32 arithmetic on denormals is the
    bulk of a step: without bf16, epochs ran 2 to 7 times slower (``benchmarks/README.md``). No loss can tell such
    values from zero. The mode is a CPU thread's, and threads inherit it when they start: called before PyTorch
    starts its worker threads, it holds for all of them; later, for the calling thread only.
    """
    torch.set_flush_denormal(True)
