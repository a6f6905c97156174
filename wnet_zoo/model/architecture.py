"""WNet3D's shape constants, without torch, for the data checks, the training config and the ONNX metadata.

``wnet_zoo/model/wnet.py`` defines the same values itself (it is copied alone into bioimage.io packages); a test
keeps the two equal.
"""

from __future__ import annotations

DEFAULT_CHANNELS = (64, 128, 256, 512)
"""Widths of the four U-Net levels: CellSeg3D's architecture (50.5 M parameters)."""
SPATIAL_MULTIPLE = 8
"""Spatial sizes must be multiples of this (three 2x poolings)."""
