"""Errors of the model layer, in a module that imports nothing heavy: the CLI catches them without
loading scikit-learn or torch first."""


class ModelLoadError(Exception):
    """A model version cannot be found, read or trusted; the message says why."""
