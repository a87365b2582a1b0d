"""Small two-domain datasets for the shift tests (imported by tests/test_shift_*.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Train with one intra-op thread: on a shared 2-core machine two threads spin against other
    jobs and a tiny network trains several times slower (the pool's workers use one thread too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_crops(folder: Path, n_patients: int = 24, shape=(5, 16, 16), domains=(("A", 1.0), ("B", 2.5)),
                seed: int = 0) -> Path:
    """``n_patients`` per domain, one .npy crop each; label 1 = a bright cube in the centre, whose
    contrast depends on the domain (the 'scanner'). Returns the manifest CSV (relative paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    d, h, w = shape
    for dom, gain in domains:
        for p in range(n_patients):
            label = p % 2
            vol = rng.normal(100.0, 10.0, shape).astype(np.float32)
            if label:
                vol[1:d - 1, h // 4:3 * h // 4, w // 4:3 * w // 4] += 30.0 * gain
            name = f"{dom}_{p:03d}.npy"
            np.save(folder / name, vol)
            rows.append({"image": name, "label": label, "domain": dom, "patient_id": f"{dom}-{p:03d}"})
    path = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


class TinyNet(torch.nn.Module):
    """A user model for the ``package.module:callable`` path."""

    def __init__(self, input_shape):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.fc = torch.nn.Linear(int(np.prod(input_shape)), 1)

    def forward(self, x):
        return self.fc(x.flatten(1))


def tiny_net(input_shape, spatial_dims):
    assert spatial_dims == len(input_shape)
    return TinyNet(input_shape)


def not_a_module(input_shape):
    return "nope"
