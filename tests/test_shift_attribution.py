"""Attribution on the simulator: re-imaging reproduces the archive, the summary's arithmetic, end to end."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mridomain.errors import SchemaMismatchError
from mridomain.shift.attribution import archive_protocols, attribution_summary, run_attribution
from mridomain.shift.data import read_sample
from mridomain.shift.manifest import manifest_from_simulation
from mridomain.shift.study import run_study
from shift_fixtures import one_torch_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from mridomain.sim import simulate

    out = tmp_path_factory.mktemp("sim") / "archive"
    simulate(out, n_patients=14, seed=3, slices=5, phases=1, slab="tumor", workers=2, progress=False)
    return out


def test_summary_arithmetic():
    rows = []
    for seed, (acq, recon, all_, ind) in enumerate([(0.6, 0.7, 0.8, 0.9), (0.5, 0.5, 0.7, 0.8)]):
        for cond, a in (("acquired", acq), ("recon", recon), ("all", all_)):
            rows.append({"dataset": "d", "seed": seed, "train_domain": "GE", "test_domain": "SIEMENS",
                         "condition": cond, "auc": a, "n": 10, "n_positive": 3, "auc_in_domain": ind})
    s = attribution_summary(pd.DataFrame(rows)).set_index("condition")
    assert list(s.index) == ["acquired", "recon", "all"]
    assert s.loc["recon", "change"] == pytest.approx(0.05)          # (0.1 + 0.0) / 2
    assert s.loc["all", "change"] == pytest.approx(0.2)
    assert s.loc["recon", "drop"] == pytest.approx(0.3)             # ((0.9 - 0.6) + (0.8 - 0.5)) / 2
    assert s.loc["recon", "recovered_fraction"] == pytest.approx(0.05 / 0.3)
    assert s.loc["acquired", "change"] == 0.0


@pytest.mark.slow
def test_reimaging_reproduces_the_archive_and_checks_the_seed(archive):
    exams = archive_protocols(archive, sim_seed=3)
    build = manifest_from_simulation(archive, crop=(5, 24, 24))
    row = build.table.iloc[0]
    from mridomain.shift.attribution import _reimage

    phantom, own = exams[row["patient_id"]]
    _, _, crop, why = _reimage((row["patient_id"], "acquired", phantom, own, 5, "tumor", 0, (5, 24, 24)))
    assert why is None and np.array_equal(crop, read_sample(row.to_dict()))
    # the agent acts only after injection: switched on a pre-contrast series it changes no pixel,
    # which lets attribution reuse the acquired crop for it at phase 0
    from mridomain.sim import replace_factors

    other = next(p for pid, (_, p) in exams.items() if p.agent != own.agent)
    switched = replace_factors(own, other, "contrast_agent")
    assert switched != own
    _, _, again, _ = _reimage((row["patient_id"], "contrast_agent", phantom, switched, 5, "tumor", 0, (5, 24, 24)))
    assert np.array_equal(again, crop)
    with pytest.raises(SchemaMismatchError, match="pass the archive's simulation seed"):
        archive_protocols(archive, sim_seed=4)


@pytest.mark.slow
def test_attribution_end_to_end(archive, tmp_path):
    from mridomain.shift.runner import results_table
    from mridomain.shift.study import open_study

    table = manifest_from_simulation(archive, crop=(5, 24, 24)).table
    # labels and splits of our own (the attribution does not depend on what the label means): per
    # domain one patient of each label in train, in val and in test
    parts = []
    for dom, g in table.groupby("domain"):
        assert len(g) >= 6, f"too few {dom} patients in the test archive"
        parts.append(g.head(6).assign(label=[0, 1] * 3, split=["train"] * 2 + ["val"] * 2 + ["test"] * 2))
    manifest = pd.concat(parts, ignore_index=True)
    out = tmp_path / "study"
    run_study(manifest, out, seeds=1, workers=1, progress=False, report=False, preset="cpu",
              model="shift_fixtures:tiny_net", epochs=1, batch_size=2)
    with pytest.raises(SchemaMismatchError, match="repeat it to run it: --model shift_fixtures:tiny_net"):
        run_attribution(out, archive, sim_seed=3, factors=("recon",), workers=1, progress=False)  # folder alone: refused
    res = run_attribution(out, archive, sim_seed=3, factors=("recon", "contrast_agent"), workers=1, progress=False,
                          model="shift_fixtures:tiny_net")
    s = res.summary
    assert set(s["condition"]) == {"acquired", "recon", "contrast_agent", "all"}
    assert set(s["train_domain"]) == {"GE", "SIEMENS"} and (s["n_patients"] == 2).all()
    assert (s.loc[s["condition"] == "contrast_agent", "change"] == 0).all()   # pre-contrast: no agent in the body
    per_seed = pd.read_csv(out / "attribution_runs.csv")
    acquired = per_seed[per_seed["condition"] == "acquired"].set_index("train_domain")["auc"]
    runs = results_table(open_study(out).store.records())
    out_of_domain = runs[runs["test_domain"] != runs["train_domain"]].set_index("train_domain")["auc"]
    assert acquired.to_dict() == pytest.approx(out_of_domain.to_dict())   # "acquired" is R_{j,k} itself
    assert (out / "fig_attribution.png").exists() and len(res.findings) == 2
