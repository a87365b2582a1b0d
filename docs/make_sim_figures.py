"""Make the simulator figures in docs/figures/ and print the realism table of docs/simulator.md.

    .venv/bin/python docs/make_sim_figures.py            # figures + realism table (a few minutes)
    .venv/bin/python docs/make_sim_figures.py --table    # the table only

Figures: one phantom across vendors, fields, matrices and agents (montages); the anatomy from
cranial to caudal; tumours of each T stage; one full slice per vendor at native size; the k-space
fingerprint (stored image and |FFT| with the acquired window) of a GE, a Siemens and pydicom's real
Siemens Avanto file. Every number of the realism table is measured here, in one run.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mridomain.sim.breast import acquisition as acq  # noqa: E402
from mridomain.sim.breast import load_preset, make_phantom, patient_phantom, physics  # noqa: E402
from mridomain.sim.breast.phantom import DENSITY_CLASSES  # noqa: E402
from mridomain.sim.physics import TISSUES  # noqa: E402
from mridomain.sim.breast.protocols import protocol_from_entry  # noqa: E402
from mridomain.sim.breast.realism import (acquired_window, dicom_kspace_ratio, entry_kspace_ratio,  # noqa: E402
                                   kspace_window_ratio, left_right_asymmetry, power_law_beta)

OUT = Path(__file__).resolve().parent / "figures"
TI = {t: i for i, t in enumerate(TISSUES)}


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


def shot(ph, p, phase=0, z=None, noise=True):
    ctx = acq.exam_context(ph, p, np.random.default_rng(1))
    z = float(ph.tumor.center[2]) if z is None else z
    return acq.to_stored(acq.acquire_slice(ph, p, ctx, z, 0, phase=phase, noise=noise)[0], p)


def montage(tiles, titles, path, cols, size=2.2):
    rows = -(-len(tiles) // cols)
    fig = plt.figure(figsize=(size * cols, (size + 0.4) * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, t in zip(axes.ravel(), tiles, titles):
        hi = np.percentile(img, 99.5)
        ax.imshow(img, cmap="gray", vmin=0, vmax=hi, interpolation="bilinear")
        ax.set_title(t, fontsize=6)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=72)
    plt.close(fig)
    print(f"{path} {path.stat().st_size // 1024} KB")


def native(img, path):
    """The stored slice at its native size (one image pixel per PNG pixel), display-windowed."""
    hi = float(np.percentile(img, 99.5))
    plt.imsave(path, np.clip(img / max(hi, 1), 0, 1), cmap="gray", vmin=0, vmax=1)
    print(f"{path} {img.shape[1]}x{img.shape[0]} {path.stat().st_size // 1024} KB")


def figures(entries: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    ph = make_phantom(np.random.default_rng(4), density="heterogeneous", tumor=True, tumor_diameter_mm=22)

    names = ["ge_signa_hdxt_3t", "ge_signa_hdx_15t", "ge_optima_mr450w_15t", "siemens_avanto_1494t",
             "siemens_skyra_3t", "siemens_triotim_3t"]
    tiles, titles = [], []
    for n in names:
        p = typical(entries[n])
        tiles.append(shot(ph, p))
        titles.append(f"{p.model} {p.field_strength:g}T {p.patient_position} {p.acq_freq}x{p.acq_phase}\n"
                      f"{p.scan_options.replace('FAST_GEMS', 'F').replace('SAT_GEMS', 'S')} "
                      f"TR {p.tr:.2f} TE {p.te:.2f}")
    montage(tiles, titles, OUT / "sim_vendors.png", 3, size=3.0)

    for n, vendor in (("ge_signa_hdxt_3t", "ge"), ("siemens_skyra_3t", "siemens")):
        native(shot(ph, typical(entries[n], patient_position="FFP")), OUT / f"sim_native_{vendor}.png")

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
        tiles.append(img[40:200, max(0, c - 80):c + 80])
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

    # anatomy from cranial to caudal (axilla, mid breast, heart, liver) on one patient
    p = typical(entries["ge_signa_hdxt_15t"], patient_position="FFP", recon_matrix=512, fov=360.0)
    tiles, titles = [], []
    for i in (2, 6):
        pa = patient_phantom(0, i)
        lo, hi = pa.z_extent
        for z in np.linspace(hi - 8, lo + 8, 4):
            tiles.append(shot(pa, p, z=float(z)))
            titles.append(f"patient {i}, {pa.density}, z = {z:+.0f} mm")
    montage(tiles, titles, OUT / "sim_anatomy.png", 4, size=3.0)

    # tumours by T stage (post-contrast, zoomed on the lesion)
    tiles, titles = [], []
    pp = typical(entries["ge_signa_hdxt_3t"], patient_position="FFP")
    for diam, inv, label in ((14, "", "T1 (14 mm)"), (32, "", "T2 (32 mm)"), (62, "", "T3 (62 mm)"),
                             (34, "chest wall", "T4a chest wall"), (34, "skin", "T4b skin")):
        pt = make_phantom(np.random.default_rng(12), density="scattered", tumor=True, tumor_diameter_mm=diam,
                          tumor_invasion=inv)
        img = shot(pt, pp, phase=1)
        ctx = acq.exam_context(pt, pp, np.random.default_rng(1))
        X, Y = acq.pixel_grid(pp, ctx)
        r = int(np.argmin(np.abs(Y[:, 0] - pt.tumor.center[1])))
        c = int(np.argmin(np.abs(X[0] - pt.tumor.center[0])))
        h = int(60 / pp.pixel_mm)
        tiles.append(img[max(0, r - h):r + h, max(0, c - h):c + h])
        titles.append(f"{label}, 1st post-contrast")
    montage(tiles, titles, OUT / "sim_stages.png", 5)

    # k-space fingerprint: a GE and a Siemens simulation against pydicom's real Avanto file
    panels = []
    for n in ("ge_signa_hdx_15t", "siemens_skyra_3t"):
        p = typical(entries[n], patient_position="FFP")
        if n == "siemens_skyra_3t":
            p = dataclasses.replace(p, acq_phase=381)
        panels.append((f"simulated {p.model}", shot(ph, p).astype(float), (p.acq_freq, p.acq_phase)))
    try:
        import pydicom
        from pydicom.data import get_testdata_file
        ds = pydicom.dcmread(get_testdata_file("MR-SIEMENS-DICOM-WithOverlays.dcm"))
        panels.append(("real Siemens Avanto (pydicom)", ds.pixel_array.astype(float),
                       acquired_window(ds.AcquisitionMatrix)))
    except Exception as err:  # pydicom-data missing: the figure shows the simulations only
        print(f"real reference skipped: {err}")
    fig = plt.figure(figsize=(3.2 * len(panels), 6.4))
    axes = fig.subplots(2, len(panels), squeeze=False)
    for k, (title, img, win) in enumerate(panels):
        r = kspace_window_ratio(img, win)
        axes[0, k].imshow(img, cmap="gray", vmax=np.percentile(img, 99.5))
        axes[0, k].set_title(f"{title}\nratio {r:.3f}", fontsize=7)
        spec = np.log10(np.abs(np.fft.fftshift(np.fft.fft2(img))) + 1)
        axes[1, k].imshow(spec, cmap="magma")
        n0, n1 = img.shape
        axes[1, k].add_patch(plt.Rectangle((n1 / 2 - win[1] / 2, n0 / 2 - win[0] / 2), win[1], win[0],
                                           fill=False, color="cyan", lw=0.8))
        axes[1, k].set_title(f"log |FFT|, acquired window {win[0]} x {win[1]}", fontsize=7)
        for ax in axes[:, k]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(OUT / "sim_kspace.png", dpi=72)
    plt.close(fig)
    print(OUT / "sim_kspace.png")


# ---- realism table -------------------------------------------------------------------------------
def kspace_rows(entries: dict, n_patients: int = 4) -> list[tuple[str, str]]:
    rows = []
    for name, e in entries.items():
        vals = [r for r in (entry_kspace_ratio(e, i) for i in range(n_patients)) if r is not None]
        rows.append((f"k-space ratio, {name}", f"{np.mean(vals):.3f} ({min(vals):.3f}-{max(vals):.3f}, n={len(vals)})"))
    return rows


def beta_row() -> tuple[str, str]:
    from mridomain.sim.breast import make_protocol
    p = make_protocol(manufacturer="GE", model="Signa HDxt", field_strength=1.5, acq_freq=512, acq_phase=512,
                      recon_matrix=512, fov=340.0, slice_thickness=1.0, tr=5.5, te=2.4,
                      scan_options="FAST_GEMS\\SAT_GEMS\\FS")
    p = dataclasses.replace(p, recon=dataclasses.replace(p.recon, filter="none", shading_correction=0.0))
    betas = []
    for i in range(8):
        ph = patient_phantom(0, i)
        ctx = acq.exam_context(ph, p, np.random.default_rng(1))
        X, Y = acq.pixel_grid(p, ctx)
        rois = []
        for z in (-20.0, 0.0, 20.0):
            img, _ = acq.acquire_slice(ph, p, ctx, z, 0, noise=False)
            fr = ph.render(X, Y, z, 1.0, p.pixel_mm)
            breast = ((fr[TI["fat"]] + fr[TI["fgt"]] + fr[TI["blood"]]) > 0.99) & (Y < ph.torso_surface_y(X) - 5)
            for r0 in range(0, 512 - 48, 24):
                for c0 in range(0, 512 - 48, 24):
                    if breast[r0:r0 + 48, c0:c0 + 48].all():
                        rois.append(img[r0:r0 + 48, c0:c0 + 48])
        if len(rois) >= 2:
            betas.append(power_law_beta(rois, p.pixel_mm, (0.05, 0.3)))
    return ("anatomical beta (noise-free, in the breast, 0.05-0.3 /mm)",
            f"{np.mean(betas):.2f} +/- {np.std(betas):.2f} (n={len(betas)} patients)")


def density_rows() -> list[tuple[str, str]]:
    draws = [make_phantom(np.random.default_rng([9, i]), tumor=False) for i in range(400)]
    out = []
    for d in DENSITY_CLASSES:
        sel = [ph for ph in draws if ph.density == d]
        fr = [ph.fgt_fraction for ph in sel]
        out.append((f"density {d}", f"{len(sel) / len(draws):.0%} of patients, FGT {np.mean(fr):.2f} of the interior"))
    return out


def snr_row() -> tuple[str, str]:
    from mridomain.sim.breast import make_protocol
    ph = make_phantom(np.random.default_rng(5), density="heterogeneous", tumor=False)
    snr = {}
    for b0 in (1.5, 3.0):
        p = make_protocol(acq_freq=256, acq_phase=256, recon_matrix=256, fov=340.0, slice_thickness=1.5,
                          scan_options="FAST_GEMS\\SAT_GEMS\\FS", field_strength=b0, tr=5.0, te=2.4)
        ctx = acq.exam_context(ph, p, np.random.default_rng(0))
        X, Y = acq.pixel_grid(p, ctx)
        fr = ph.render(X, Y, 0.0, 1.5, p.pixel_mm)
        m = fr[TI["muscle"]] > 0.99
        clean = np.abs(acq.acquire_slice(ph, p, ctx, 0.0, 0, noise=False, complex_output=True)[0])
        a = [acq.acquire_slice(ph, p, ctx, 0.0, k, noise=True, complex_output=True)[0] for k in (1, 2)]
        sigma = np.std((a[0] - a[1]).real) / np.sqrt(2)
        snr[b0] = clean[m].mean() / sigma
    return ("muscle SNR 3 T / 1.5 T (same voxel, TR/TE/flip)", f"{snr[3.0] / snr[1.5]:.2f} ({snr[1.5]:.0f} -> {snr[3.0]:.0f})")


def fat_rows() -> list[tuple[str, str]]:
    out = []
    b1 = np.float32(1.0)
    for method in ("special", "spair", "chess"):
        r = [float(physics.fat_residual(method, np.float32(df), b1)) for df in (0.0, 100.0)]
        out.append((f"fat-sat residual {method} (on resonance / 100 Hz off)", f"{r[0]:.2f} / {r[1]:.2f}"))
    return out


def kinetics_rows() -> list[tuple[str, str]]:
    """Curve type by Kuhl's criterion: late (phase 4) vs early (phase 1) signal, +-10 %."""
    kinds = {"washout": 0, "plateau": 0, "persistent": 0}
    enh = []
    n = 300
    for i in range(n):
        ph = patient_phantom(1, i)
        t1, t2s, pd = physics.tissue_relaxation("tumor", 1.5)
        r1 = physics.relaxivity("MAGNEVIST", 1.5)
        s = []
        for phase in (0, 1, 4):
            c = physics.concentration_mM("tumor", physics.phase_time_s(phase), ph.kinetics)
            s.append(float(physics.spgr_signal(pd, physics.t1_with_agent(t1, r1, c), t2s, 5.0, 2.4, 10.0)))
        enh.append(s[1] / s[0] - 1)
        late = s[2] / s[1] - 1
        kinds["washout" if late < -0.1 else "persistent" if late > 0.1 else "plateau"] += 1
    out = [("tumour curve types (Magnevist, 1.5 T)", ", ".join(f"{k} {v / n:.0%}" for k, v in kinds.items())),
           ("tumour initial enhancement (1st post / pre - 1)", f"median {np.median(enh):.0%}")]
    for agent in ("MAGNEVIST", "GADAVIST", "MULTIHANCE"):
        ph = patient_phantom(1, 0)
        t1, t2s, pd = physics.tissue_relaxation("tumor", 3.0)
        c = physics.concentration_mM("tumor", physics.phase_time_s(1), ph.kinetics)
        s0 = physics.spgr_signal(pd, t1, t2s, 5.0, 2.4, 10.0)
        s1 = physics.spgr_signal(pd, physics.t1_with_agent(t1, physics.relaxivity(agent, 3.0), c), t2s, 5.0, 2.4, 10.0)
        out.append((f"tumour enhancement, {agent} at 3 T (patient 0)", f"{float(s1 / s0 - 1):.0%}"))
    return out


def asymmetry_row() -> tuple[str, str]:
    from mridomain.sim.breast import make_protocol
    p = make_protocol(acq_freq=192, acq_phase=192, recon_matrix=256, fov=360.0, slice_thickness=2.0)
    vals = []
    for i in range(6):
        ph = patient_phantom(0, i)
        ctx = acq.exam_context(ph, p, np.random.default_rng(0))
        lo, hi = ph.z_extent
        for z in np.linspace(lo + 5, hi - 5, 5):
            img, _ = acq.acquire_slice(ph, p, ctx, float(z), 0, noise=False)
            vals.append(left_right_asymmetry(img, img > 0.05 * img.max()))
    return ("left-right asymmetry ||I - mirror(I)|| / ||I|| (5 levels x 6 patients)",
            f"min {min(vals):.2f}, median {np.median(vals):.2f}")


def stage_rows() -> list[tuple[str, str]]:
    tms = [make_phantom(np.random.default_rng([5, i]), tumor=True).tumor for i in range(1000)]
    t = np.bincount([tm.t_stage for tm in tms], minlength=5)[1:] / len(tms)
    npos = {k: np.mean([tm.n_stage > 0 for tm in tms if tm.t_stage == k]) for k in (1, 2, 3, 4)}
    m1 = np.mean([tm.m_stage for tm in tms])
    return [("T stage T1 / T2 / T3 / T4", " / ".join(f"{v:.0%}" for v in t)),
            ("node positive by T1 / T2 / T3 / T4", " / ".join(f"{v:.0%}" for v in npos.values())),
            ("M1", f"{m1:.1%}")]


def kspace_diagnostics(entries: dict) -> None:
    """Why a Siemens slice misses 0.15: noise-free ratio, a pure-noise image through the same
    chain, and the share of beyond-window power in the posterior third (one typical protocol)."""
    p = typical(entries["siemens_avanto_1494t"], patient_position="FFP", acq_phase=381)
    ph = patient_phantom(0, 1)
    ctx = acq.exam_context(ph, p, np.random.default_rng([0, 1, 1]))
    z = float(ph.default_slab(1, p.slice_thickness)[0])
    w = (p.acq_freq, p.acq_phase)
    full = acq.acquire_slice(ph, p, ctx, z, 0)[0]
    clean = acq.acquire_slice(ph, p, ctx, z, 0, noise=False)[0]
    X, _ = acq.pixel_grid(p, ctx)
    empty = np.zeros((len(TISSUES),) + X.shape, dtype=np.float32)
    noise_only = acq.acquire_slice(ph, p, ctx, z, 0, fractions=empty)[0]
    n = p.recon_matrix
    inside = np.zeros((n, n), bool)
    inside[n // 2 - w[0] // 2:n // 2 - w[0] // 2 + w[0], n // 2 - w[1] // 2:n // 2 - w[1] // 2 + w[1]] = True
    spec = np.fft.fftshift(np.fft.fft2(full))
    spec[inside] = 0
    hp = np.abs(np.fft.ifft2(np.fft.ifftshift(spec))) ** 2
    print(f"diagnostics, {p.model} {p.field_strength:g} T {w[0]} x {w[1]} -> {n}: full {kspace_window_ratio(full, w):.3f}, "
          f"noise-free {kspace_window_ratio(clean, w):.3f}, pure noise {kspace_window_ratio(noise_only, w):.3f}, "
          f"posterior third holds {hp[2 * n // 3:].sum() / hp.sum():.0%} of the beyond-window power")


def table(entries: dict) -> None:
    rows = []
    try:
        from pydicom.data import get_testdata_file
        rows.append(("k-space ratio, real Siemens Avanto (pydicom MR-SIEMENS-DICOM-WithOverlays.dcm)",
                     f"{dicom_kspace_ratio(get_testdata_file('MR-SIEMENS-DICOM-WithOverlays.dcm')):.3f}"))
    except Exception as err:
        rows.append(("k-space ratio, real Siemens Avanto", f"not measured ({err})"))
    rows += kspace_rows(entries)
    rows.append(beta_row())
    rows += density_rows()
    rows.append(snr_row())
    rows += fat_rows()
    rows += kinetics_rows()
    rows.append(asymmetry_row())
    rows += stage_rows()
    print("| probe | simulated |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    kspace_diagnostics(entries)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", action="store_true", help="print the realism table only")
    args = ap.parse_args()
    entries = {e["name"]: e for e in load_preset("dbc")["scanners"]}
    if not args.table:
        figures(entries)
    table(entries)


if __name__ == "__main__":
    main()
