"""What the CLI needs before anything heavy loads: the training layer's errors and the backend names
(the modules that fit models import scikit-learn, pandas or torch; see also models/errors.py)."""

BACKENDS = ("linear", "hybrid", "finetune")


class DataError(Exception):
    """Bad input data; str() is the one-line message shown to the user."""


class PromotionRefused(Exception):
    """The challenger scores worse than the champion on the same rows (and --force was not given)."""
