"""Tools that build and inspect datasets (AV-Digits, manifests from folder layouts, media checks and statistics);
:mod:`xkd.data` is the path a clip takes into training and evaluation."""
