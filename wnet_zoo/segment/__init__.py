"""From a foreground probability to nuclei, torch-free: splitting, boundaries, measurements, evaluation."""
