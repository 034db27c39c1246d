"""`arcbench run` (filled in by its issue)."""
from . import main  # noqa: F401
