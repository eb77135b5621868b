"""Data: the meta.json format, reading images, data sets, preparation, synthetic data."""
