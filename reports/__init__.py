"""arcbench reports: run dirs -> pandas -> reference check -> table / md / csv / json / html.

Start from :func:`load_runs`; :mod:`.align`, :mod:`.compare` and
:mod:`.importlog` cover loss alignment, run-set comparison and SDAA model-zoo
log import; :mod:`.modes` gives each mode of ``arcbench report`` its runs and its
text, and ``arcbench.cli.report`` wires them to the command line.
"""
from .curves import load_accuracy_curve, load_loss_curve
from .reference import apply_references, canonical_backbone, canonical_dataset, load_references, match
from .runs import COLUMNS, ReportWarning, discover, load_run, load_runs

__all__ = [
    "COLUMNS", "ReportWarning", "apply_references", "canonical_backbone", "canonical_dataset", "discover",
    "load_accuracy_curve", "load_loss_curve", "load_references", "load_run", "load_runs", "match",
]
