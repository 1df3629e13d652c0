"""The path a clip takes into training and evaluation: manifest -> media file or decoded cache -> dataset and
sampler -> views. Tools that build or inspect datasets are in :mod:`xkd.datasets`."""
