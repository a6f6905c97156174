"""Self-supervised training of WNet3D: the configuration, the data, the step, the loop and its records."""
