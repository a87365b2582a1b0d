"""Make the simulator montages in docs/figures/: one phantom across vendors, fields, matrices, agents.

    .venv/bin/python docs/make_sim_figures.py
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mridomain.sim import acquisition as acq  # noqa: E402
from mridomain.sim import load_preset, make_phantom  # noqa: E402
from mridomain.sim.protocols import protocol_from_entry  # noqa: E402

OUT = Path(__file__).resolve().parent / "figures"


def typical(entry: dict, **over) -> "acq.Protocol":
    """The most frequent value of every IAP of a preset entry (means for TR/TE)."""
    e = dict(entry)
    for k, v in entry.items():
        if isinstance(v, dict) and k not in ("recon",):
            if "mean" in v:
                e[k] = v["mean"]
            elif {"min", "max"} <= set(v):
                e[k] = 0.5 * (v["min"] + v["max"])
            else:
                e[k] = max(v, key=v.get)
    e["readout_coupling"] = False
    p = protocol_from_entry(e, np.random.default_rng(0))
    return dataclasses.replace(p, **over) if over else p


def shot(ph, p, phase=0, z=None):
    ctx = acq.exam_context(ph, p, np.random.default_rng(1))
    z = float(ph.tumor.center[2]) if z is None else z
    return acq.to_stored(acq.acquire_slice(ph, p, ctx, z, 0, phase=phase)[0], p)


def montage(tiles, titles, path, cols):
    rows = -(-len(tiles) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.6 * rows))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, img, t in zip(np.atleast_1d(axes).ravel(), tiles, titles):
        hi = np.percentile(img, 99.5)
        ax.imshow(img, cmap="gray", vmin=0, vmax=hi, interpolation="bilinear")
        ax.set_title(t, fontsize=6)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=72)
    plt.close(fig)
    print(f"{path} {path.stat().st_size // 1024} KB")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    ph = make_phantom(np.random.default_rng(4), density="heterogeneous", tumor=True, tumor_diameter_mm=22)
    entries = {e["name"]: e for e in load_preset("dbc")["scanners"]}

    names = ["ge_signa_hdxt_3t", "ge_signa_hdx_15t", "ge_optima_mr450w_15t", "siemens_avanto_1494t",
             "siemens_skyra_3t", "siemens_triotim_3t"]
    tiles, titles = [], []
    for n in names:
        p = typical(entries[n])
        tiles.append(shot(ph, p))
        titles.append(f"{p.model} {p.field_strength:g}T {p.patient_position} {p.acq_freq}x{p.acq_phase}\n"
                      f"{p.scan_options.replace('FAST_GEMS', 'F').replace('SAT_GEMS', 'S')} "
                      f"TR {p.tr:.2f} TE {p.te:.2f}")
    montage(tiles, titles, OUT / "sim_vendors.png", 3)

    tiles, titles = [], []
    for n in ("ge_signa_hdxt_15t", "siemens_avanto_15t"):
        base = typical(entries[n], patient_position="FFP")
        for b0 in (1.5, 3.0):
            p = dataclasses.replace(base, field_strength=b0)
            tiles.append(shot(ph, p))
            titles.append(f"{p.manufacturer} {p.model} at {b0:g} T\n(B1+, T1, SNR, fat-sat residual)")
    montage(tiles, titles, OUT / "sim_field_strength.png", 4)

    tiles, titles = [], []
    base = typical(entries["siemens_skyra_3t"], patient_position="FFP", recon_matrix=512)
    for f, ph_ in ((320, 320), (384, 384), (448, 381), (512, 358)):
        p = dataclasses.replace(base, acq_freq=f, acq_phase=ph_)
        img = shot(ph, p)
        t = ph.tumor.center
        c = int((t[0] + p.fov / 2) / p.pixel_mm)
        tiles.append(img)
        tiles.append(img[max(0, 40):200, max(0, c - 80):c + 80])
        titles += [f"acq {f} X {ph_} -> recon 512", "zoom: truncation blur / Gibbs"]
    montage(tiles, titles, OUT / "sim_matrix.png", 4)

    tiles, titles = [], []
    base = typical(entries["ge_signa_hdxt_3t"], patient_position="FFP")
    tiles.append(shot(ph, dataclasses.replace(base, agent="MAGNEVIST")))
    titles.append("pre-contrast (any agent:\nidentical pixels)")
    for agent in ("MAGNEVIST", "GADAVIST", "MULTIHANCE"):
        p = dataclasses.replace(base, agent=agent, contrast_agent=agent)
        tiles.append(shot(ph, p, phase=1))
        titles.append(f"1st post-contrast, {agent}\n(r1 at 3 T)")
    montage(tiles, titles, OUT / "sim_agents.png", 4)


if __name__ == "__main__":
    main()
