"""Prediction with ONNX Runtime, never importing torch: model files, engines, tiling, the
:class:`~wnet_zoo.predict.predictor.Predictor` and file-level prediction; :mod:`~wnet_zoo.predict.stream` for volumes
larger than memory.
"""
