"""mridomain.shift: the scanner domain-shift study (Guo et al., "The impact of scanner domain shift on
deep learning performance in medical imaging").

Per scanner domain, patients are split 2/3 / 1/6 / 1/6; a model M_j is trained on Train_j (best
epoch by validation AUC) and tested on Test_1 and Test_2, over seeds; Table 2 and the paired Delta
(bootstrap CI, Wilcoxon p) follow, plus target-domain mixing (Appendix A.1), training noise
(A.2) and, on the simulator, attribution of the drop to acquisition factors.

```python
from mridomain.shift import manifest_from_dbc, run_study, run_mixing, run_noise, render_report
build = manifest_from_dbc("DBC/")                 # or manifest_from_index / manifest_from_simulation
build.table.to_parquet("breast.parquet")
run_study("breast.parquet", "study/", seeds=10, preset="paper")
run_mixing("breast.parquet", "study/"); run_noise("breast.parquet", "study/")
render_report("study/")                           # tables, Figures 2-5, report.html
```
"""
from __future__ import annotations

import importlib
from typing import Any

# Exported names and their modules. Loaded on first use, so `mridomain --help` and the CLI's
# argument parsing do not import torch.
_EXPORTS = {
    "classifier": ("ShiftClassifier",),
    "config": ("PRESETS", "ShiftConfig", "make_config"),
    "data": ("StudyData", "crop_volume", "load_samples", "read_sample"),
    "manifest": ("ManifestBuild", "ManifestError", "manifest_from_dbc", "manifest_from_index",
                 "manifest_from_simulation", "read_manifest", "validate_manifest", "write_manifest"),
    "models": ("MRNet2D", "NoduleXNet", "build_model"),
    "protocol": ("MIXING_FRACTIONS", "NOISE_ALPHAS", "PAPER_FRACTIONS", "RunSpec", "add_noise", "mixing_indices",
                 "split_domain", "study_splits"),
    "report": ("render_report",),
    "runner": ("ResultsStore", "execute_runs", "results_table", "train_and_test"),
    "stats": ("auc", "bootstrap_ci", "delta_table", "table2", "wilcoxon_p"),
    "study": ("ExperimentResult", "Study", "open_study", "prepare_study", "run_experiment", "run_mixing",
              "run_noise", "run_study"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mridomain.shift' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mridomain.shift.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
