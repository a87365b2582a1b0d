"""The case-control cohort of the simulator and the lesion-presence task built on it."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from mridomain.sim.breast import load_preset
from mridomain.sim.breast.simulate import draw_cohort


def test_case_control_cohort_balances_each_manufacturer_and_changes_nothing_else():
    data = load_preset("dbc")
    pop_ph, pop_pr, pop_groups = draw_cohort(5, 60, data, "population")
    ph, pr, groups = draw_cohort(5, 60, data, "t-stage-case-control")
    assert pop_groups == [None] * 60
    # the protocols (scanner, matrix, timing, ...) and every non-stage draw of the body are the population's
    assert pr == pop_pr
    assert [p.torso_w for p in ph] == [p.torso_w for p in pop_ph]
    assert [p.weight_kg for p in ph] == [p.weight_kg for p in pop_ph]
    assert all(p.tumor is not None for p in ph)
    for manufacturer in {p.manufacturer for p in pr}:
        mine = [g for g, p in zip(groups, pr) if p.manufacturer == manufacturer]
        assert mine == ["case", "control"] * (len(mine) // 2) + ["case"] * (len(mine) % 2)   # alternating
    for g, p in zip(groups, ph):
        assert (p.tumor.t_stage > 2) == (g == "case")
    # a stage group keeps draw_stage's spread: controls are T1 and T2, cases T3 and T4
    assert set(Counter(p.tumor.t_stage for g, p in zip(groups, ph) if g == "control")) == {1, 2}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from mridomain.sim.breast import simulate

    out = tmp_path_factory.mktemp("cohort") / "archive"
    simulate(out, n_patients=6, seed=2, slices=3, phases=1, slab="tumor", workers=1, progress=False,
             cohort="t-stage-case-control")
    return out


@pytest.mark.slow
def test_cohort_is_written_and_presence_patches_reimage_exactly(archive):
    from mridomain.shift.attribution import _reimage, archive_protocols
    from mridomain.shift.data import read_sample
    from mridomain.shift.manifest import presence_manifest_from_simulation

    sim = pd.read_parquet(archive / "manifest.parquet")
    assert (sim["cohort"] == "t-stage-case-control").all()
    assert ((sim["t_stage"] > 2) == (sim["cohort_group"] == "case")).all()
    features = pd.read_csv(archive / "Clinical_and_Other_Features.csv", header=1).iloc[1:]
    assert features["Cohort (simulated)"].str.startswith("t-stage-case-control: ").all()

    build = presence_manifest_from_simulation(archive, crop=(1, 20, 20))
    table = build.table
    controls = set(sim.loc[sim["t_stage"] <= 2, "patient_id"])
    assert set(table["patient_id"]) == controls
    assert (table.groupby("patient_id")["label"].agg(sorted).map(tuple) == (0, 1)).all()   # a lesion and a mirror patch
    width = sim.set_index("patient_id")["recon_matrix"]
    wide = table.pivot(index="patient_id", columns="crop_site", values="crop_x")
    assert np.allclose(wide["contralateral"], width.reindex(wide.index) - 1 - wide["lesion"])
    # re-imaging a patient with its own protocol (the archive's cohort re-drawn) gives both patches exactly
    exams = archive_protocols(archive, sim_seed=2)
    pid = table["patient_id"].iloc[0]
    rows = table.index[table["patient_id"] == pid]
    sites = [(int(i), table.loc[i, "crop_site"]) for i in rows]
    phantom, own = exams[pid]
    _, _, crops, why = _reimage((pid, "acquired", phantom, own, 3, "tumor", 0, (1, 20, 20), sites))
    assert why is None
    for i in rows:
        assert np.array_equal(crops[int(i)], read_sample(table.loc[i].to_dict()))
