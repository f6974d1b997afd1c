"""dlf: deep-learning-foundations. Language models from first principles."""

from dlf.errors import DlfError

__version__ = "0.1.0"
__all__ = ["DlfError", "__version__"]
