"""From a trained model to files others run: ONNX, TorchScript and a bioimage.io package, checked for parity."""
