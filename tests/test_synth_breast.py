"""The synthesis system on the simulated breast protocol: a tiny end-to-end train through the
ConvLSTM path, read from the NIfTI layout exactly as ``mridomain synth train`` reads it."""
from __future__ import annotations

import json

import numpy as np

from mridomain.sim.breast.exams import simulate_breast_exams
from mridomain.sim.breast.multiseq import BREAST_SEQUENCES


def test_breast_layout_trains_through_the_convlstm(tmp_path):
    from mridomain.synth.model import load_run
    from mridomain.synth.training import train

    simulate_breast_exams(tmp_path / "exams", n_patients=5, seed=2, slices=3, size=(32, 48), pixel_mm=7.0,
                          workers=1, progress=False)
    # the folder alone, as `mridomain synth train EXAMS` passes it: no sequence list, no ConvLSTM switch;
    # the layout's dataset.json names both (only the size of the run is made tiny here)
    train(tmp_path / "exams", tmp_path / "run", preset="cpu", epochs=1, steps_per_epoch=2, batch_size=2,
          val_subjects=1, val_slices=2, crop=(32, 32), fractions=(0.6, 0.2, 0.2), progress=False,
          network={"enc_channels": (4, 8, 8), "dec_channels": (8, 4), "n_res_enc": 1, "n_res_dec": 1})
    schema = json.loads((tmp_path / "run" / "schema.json").read_text())
    assert tuple(schema["sequences"]) == BREAST_SEQUENCES
    assert schema["timepoints"] == {"t1": 1, "fatsatt1": 1, "t2": 1, "dce": 6, "fatsatdce": 6, "washin": 1,
                                    "washout": 1, "dwi": 4}
    run = load_run(tmp_path / "run")
    assert run.config.network.lstm_layers >= 1
    gen = run.generator
    assert gen.enc_lstm is not None and gen.dec_lstm is not None
    # a 4-D target comes out with its time points: DWI from T2, 4 b-values
    from mridomain.synth.data import load_dataset

    sub = load_dataset(tmp_path / "exams", BREAST_SEQUENCES, progress=False).subjects[0]
    out = run.translate(sub, "t2", ["dwi", "dce"])
    assert out["dwi"].shape == sub.volumes["dwi"].shape and out["dce"].shape[0] == 6
    assert np.isfinite(out["dwi"]).all()
