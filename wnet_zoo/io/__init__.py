"""Files in and out, torch-free: volumes (TIFF, OME, zarr), result stores, downloads, atomic writes."""
