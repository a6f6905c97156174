"""WNet3D itself (one self-contained file, copied into bioimage.io packages), its losses, and loading weights.

Everything here imports torch but ``architecture`` and ``pretrained`` (read when the command line starts).
"""
