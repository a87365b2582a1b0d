"""Attribution on the simulator: re-imaging reproduces the archive, the summary's arithmetic, end to end."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mridomain.errors import SchemaMismatchError
from mridomain.shift.attribution import archive_protocols, attribution_findings, attribution_summary, run_attribution
from mridomain.shift.data import read_sample
from mridomain.shift.manifest import manifest_from_simulation
from mridomain.shift.study import run_study
from shift_fixtures import one_torch_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from mridomain.sim.breast import simulate

    out = tmp_path_factory.mktemp("sim") / "archive"
    simulate(out, n_patients=14, seed=3, slices=5, phases=1, slab="tumor", workers=2, progress=False)
    return out


def test_summary_pools_seeds_and_partners_with_intervals():
    from mridomain.shift.attribution import _auc
    from mridomain.shift.stats import auc

    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 20)
    groups = np.array([f"p{i}" for i in range(40)])
    acquired = rng.normal(size=(3, 40)) + 0.8 * y             # 3 seeds
    switched = np.stack([acquired + 0.0 * y,                  # recon: changes nothing
                         acquired + 0.6 * y,                  # matrix: separates the classes more
                         acquired + 0.9 * y], axis=1)          # all
    switched = np.repeat(switched[:, :, None, :], 2, axis=2)   # two partners
    switched[:, :, 1, :] += rng.normal(scale=0.01, size=(3, 3, 40))
    auc_in = np.array([0.95, 0.9, 0.92])
    s = attribution_summary(acquired, switched, y, groups, ["recon", "matrix", "all"], auc_in, n_boot=300)
    s = s.set_index("condition")
    assert list(s.index) == ["acquired", "recon", "matrix", "all", "sum of factors", "interaction"]
    a = np.array([auc(y, acquired[k]) for k in range(3)])
    assert _auc(acquired, y) == pytest.approx(a)
    assert s.loc["acquired", "auc_mean"] == pytest.approx(a.mean())
    assert s.loc["acquired", "change"] == pytest.approx(np.mean(a - auc_in))   # Delta's sign: negative = lower
    m = np.mean([[auc(y, switched[k, 1, r]) - a[k] for r in range(2)] for k in range(3)])
    assert s.loc["matrix", "change"] == pytest.approx(m)
    assert s.loc["sum of factors", "change"] == pytest.approx(s.loc["recon", "change"] + s.loc["matrix", "change"])
    assert s.loc["interaction", "change"] == pytest.approx(s.loc["all", "change"] - s.loc["sum of factors", "change"])
    assert (s["ci_low"] <= s["change"] + 1e-12).all() and (s["change"] <= s["ci_high"] + 1e-12).all()
    assert s.loc["matrix", "distinguishable"] and s.loc["matrix", "ci_low"] > 0
    assert abs(s.loc["recon", "change"]) < 0.01 and not s.loc["recon", "distinguishable"]
    lines = attribution_findings(s.reset_index().assign(dataset="d", train_domain="GE", test_domain="SIEMENS",
                                                        n_seeds=3, n_partners=2, n_samples=40, n_positive=20,
                                                        n_patients=40))
    assert "matrix +" in lines[0] and "recon" not in lines[0]   # silent on what cannot be told from zero


@pytest.mark.slow
def test_reimaging_reproduces_the_archive_and_checks_the_seed(archive):
    exams = archive_protocols(archive, sim_seed=3)
    build = manifest_from_simulation(archive, crop=(5, 24, 24))
    row = build.table.iloc[0]
    from mridomain.shift.attribution import _reimage

    phantom, own = exams[row["patient_id"]]
    _, _, crops, why = _reimage((row["patient_id"], "acquired", phantom, own, 5, "tumor", 0, (5, 24, 24),
                                 [(0, "lesion")]))
    crop = crops[0]
    assert why is None and np.array_equal(crop, read_sample(row.to_dict()))
    # the agent acts only after injection: switched on a pre-contrast series it changes no pixel,
    # which lets attribution reuse the acquired crop for it at phase 0
    from mridomain.sim.breast import replace_factors

    other = next(p for pid, (_, p) in exams.items() if p.agent != own.agent)
    switched = replace_factors(own, other, "contrast_agent")
    assert switched != own
    _, _, again, _ = _reimage((row["patient_id"], "contrast_agent", phantom, switched, 5, "tumor", 0, (5, 24, 24),
                               [(0, "lesion")]))
    assert np.array_equal(again[0], crop)
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
    res = run_attribution(out, archive, sim_seed=3, factors=("recon", "contrast_agent"), partners=2, n_boot=50,
                          workers=1, progress=False, model="shift_fixtures:tiny_net")
    s = res.summary
    assert set(s["condition"]) == {"acquired", "recon", "contrast_agent", "all", "sum of factors", "interaction"}
    assert set(s["train_domain"]) == {"GE", "SIEMENS"} and (s["n_patients"] == 2).all() and (s["n_partners"] == 2).all()
    assert (s.loc[s["condition"] == "contrast_agent", "change"] == 0).all()   # pre-contrast: no agent in the body
    saved = pd.read_csv(out / "attribution.csv")
    assert {"ci_low", "ci_high", "distinguishable"} <= set(saved.columns) and "interaction" in set(saved["condition"])
    per_seed = pd.read_csv(out / "attribution_runs.csv")
    acquired = per_seed[per_seed["condition"] == "acquired"].set_index("train_domain")["auc"]
    runs = results_table(open_study(out).store.records())
    out_of_domain = runs[runs["test_domain"] != runs["train_domain"]].set_index("train_domain")["auc"]
    assert acquired.to_dict() == pytest.approx(out_of_domain.to_dict())   # "acquired" is R_{j,k} itself
    assert len(per_seed) == 2 * (1 + 3 * 2)                                # acquired + 3 conditions x 2 partners
    assert (out / "fig_attribution.png").exists() and len(res.findings) == 2
