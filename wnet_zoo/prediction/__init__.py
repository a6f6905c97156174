"""Prediction with ONNX Runtime, never importing torch: model files, engines, tiling, the
:class:`~wnet_zoo.prediction.predictor.Predictor` and file-level prediction; :mod:`~wnet_zoo.prediction.stream`
for volumes larger than memory.
"""
