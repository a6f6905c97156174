"""Streaming prediction: volumes cut into blocks of whole zarr chunks, run in phases on this machine or on
Dask, with nuclei cut by block borders merged.
"""
