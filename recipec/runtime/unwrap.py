"""accelerate's ``unwrap_model`` without importing DeepSpeed in a run that does not use it.

``accelerator.unwrap_model`` (and ``get_state_dict``, which calls it before every save)
strips the wrappers a prepared model may carry: DDP, FSDP, a DeepSpeed engine. To test
for the last, accelerate's ``extract_model_from_parallel`` imports ``deepspeed`` whenever
the package is installed, whether or not the run uses it: about 3 seconds of imports on
a CPU machine (DeepSpeed pulls in MLflow), paid at the first unwrap of a run, which is
often its final save.

A DeepSpeed engine exists only once ``deepspeed`` has been imported (accelerate imports
it to build one), so where it has not been, no object can be one and the import is
skipped: :func:`skip_deepspeed_import` makes accelerate's test read ``sys.modules``
first. The result of every unwrap is unchanged; only the needless import goes. With an
accelerate that has moved the test elsewhere it changes nothing.
"""

from __future__ import annotations

import sys


def skip_deepspeed_import() -> bool:
    """Make ``extract_model_from_parallel`` test for DeepSpeed's engine only where ``deepspeed`` is imported.

    Returns:
        True when accelerate's test was found and changed, False when this accelerate has none
        where it is looked for (nothing changed then: the unwrap imports DeepSpeed as before).
    """
    try:
        from accelerate.utils import other
    except ImportError:
        return False
    installed = getattr(other, "is_deepspeed_available", None)
    if installed is None or getattr(installed, "_recipec_imported_only", False):
        return installed is not None

    def imported_and_available() -> bool:
        return "deepspeed" in sys.modules and installed()

    imported_and_available._recipec_imported_only = True  # type: ignore[attr-defined]
    other.is_deepspeed_available = imported_and_available
    return True
