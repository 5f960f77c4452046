"""Model specs, training, calibration, baselines, evaluation and the model registry."""
