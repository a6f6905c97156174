"""WNet3D's shape constants, without torch: the data checks and the ONNX metadata read them too."""

DEFAULT_CHANNELS = (64, 128, 256, 512)
"""Widths of the four U-Net levels: CellSeg3D's architecture (50.5 M parameters)."""
SPATIAL_MULTIPLE = 8
"""Spatial sizes must be multiples of this (three 2x poolings)."""
