"""mridomain.sim: the physics-based MRI simulators, the project's measuring instruments.

- :mod:`mridomain.sim.breast`: multi-vendor breast DCE-MRI written as real DICOM (IAP and shift work);
- :mod:`mridomain.sim.brain`: multi-sequence brain MRI written as NIfTI (synthesis work);
- :mod:`mridomain.sim.physics`: the signal equations and tissue tables both share.

The breast simulator's names are re-exported here, and its modules answer to their pre-0.2 paths
(``mridomain.sim.phantom`` is ``mridomain.sim.breast.phantom``), for one release. New code imports
from :mod:`mridomain.sim.breast`. See docs/simulator.md.
"""
import importlib
import sys

from mridomain.sim.breast import *  # noqa: F401,F403  (the one-release compatibility surface)
from mridomain.sim.breast import __all__ as _breast_all

# The same module objects under their old names, so old imports see one module, not a copy.
_MOVED_TO_BREAST = ("acquisition", "attribution", "dicom_writer", "phantom", "protocols", "realism",
                    "simulate", "vendors")
for _name in _MOVED_TO_BREAST:
    sys.modules[f"{__name__}.{_name}"] = importlib.import_module(f"mridomain.sim.breast.{_name}")

__all__ = list(_breast_all)
