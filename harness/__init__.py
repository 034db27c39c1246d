"""arcbench: train, verify and benchmark ArcFace models on any PyTorch device."""
__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402  (the one name plugin authors need)

__all__ = ["hookimpl", "__version__"]
