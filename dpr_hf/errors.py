"""The package's exceptions. Defined in `models/errors.py`, because the models' remote-code copy raises them too."""

from .models.errors import DPRDataError, MismatchError

__all__ = ["DPRDataError", "MismatchError"]
