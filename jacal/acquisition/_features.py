"""Moved to :mod:`jacal.features` (the public feature pass); this alias goes in the next release."""
import warnings

from jacal.features import *  # noqa: F401,F403
from jacal.features import __all__  # noqa: F401

warnings.warn("jacal.acquisition._features moved to jacal.features", DeprecationWarning, stacklevel=2)
