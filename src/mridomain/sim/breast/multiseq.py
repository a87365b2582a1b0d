"""The breast multi-sequence protocol of the Seq2Seq paper, rendered from the breast phantom.

The paper's in-house breast dataset (Philips Ingenia 3.0 T) has eight sequences: T1, fat-saturated T1,
T2, DCE and fat-saturated DCE (6 time points within 7.5 min), wash-in, wash-out and DWI (b = 0, 150,
800, 1500 s/mm^2). This module images a :class:`~mridomain.sim.breast.phantom.Phantom` with each of
them from its signal equation (docs/simulator.md, "Multi-sequence protocol", cites every parameter):

* T1 / DCE: 3-D spoiled gradient echo, :func:`mridomain.sim.physics.spgr_signal`, contrast uptake from
  the phantom's own kinetics (:func:`~mridomain.sim.physics.concentration_mM`, 1/T1 = 1/T1_0 + r1 C);
* FatSatT1 / FatSatDCE: the same with SPAIR fat suppression (:func:`~mridomain.sim.physics.fat_residual`);
* T2: turbo spin echo, S = PD (1 - exp(-TR/T1)) exp(-TE_eff/T2), no fat suppression;
* DWI: SPAIR spin-echo EPI, S_b = PD (1 - exp(-TR/T1)) exp(-TE/T2) exp(-b ADC);
* wash-in = S(t_1) - S(t_0) and wash-out = S(t_1) - S(t_5) of the FatSatDCE (first post-contrast minus
  pre-contrast; first post-contrast minus last), both clipped at 0: the paper names the two maps but
  gives no formula; these are the subtraction maps of the DCE time points.

Everything is on a small 2-D-per-slice grid (a few axial slices through the lesion) so a cohort
renders in seconds per patient; noise is Rician (complex Gaussian on the magnitude). EPI geometric
distortion is not modelled (see docs). Cysts (absent from the DCE phantom) and the pre-treatment
response trait are drawn here from streams of their own, so the phantom's draws are unchanged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from mridomain.sim.breast.phantom import Phantom
from mridomain.sim.physics import (TISSUE_PROPS, TISSUES, TissueProps, concentration_mM, fat_residual,
                                   phase_time_s, relaxivity, spgr_signal, t1_with_agent, tissue_relaxation)

__all__ = ["BREAST_SEQUENCES", "FOUR_D", "B_VALUES", "DCE_PHASES", "MultiSequenceProtocol", "PHILIPS_INGENIA_3T",
           "ADC_MM2_S", "CYST_PROPS", "Cyst", "draw_cysts", "ResponseTrait", "draw_response", "ExamImages",
           "render_exam", "wash_maps", "fit_adc", "SEG_LABELS", "CYST_PREVALENCE", "PCR_RATE"]

#: the paper's eight sequences (file suffixes of the subject layout), in Table 2's order
BREAST_SEQUENCES: tuple[str, ...] = ("t1", "fatsatt1", "t2", "dce", "fatsatdce", "washin", "washout", "dwi")
#: the 4-D sequences (time points / b-values on a leading axis)
FOUR_D: tuple[str, ...] = ("dce", "fatsatdce", "dwi")
#: b-values of the paper's DWI (s/mm^2)
B_VALUES: tuple[float, ...] = (0.0, 150.0, 800.0, 1500.0)
#: DCE time points: the pre-contrast phase and 5 post-contrast phases centred 60 ... 420 s after injection
#: (physics.phase_time_s), so all 6 lie within 7.5 min
DCE_PHASES = 6

#: labels of the ``_seg`` map of the subject layout
SEG_LABELS = {"tumor": 1, "cyst": 2}

# ---- tissue parameters (docs/simulator.md cites each) ------------------------------------------------------
#: apparent diffusion coefficient, 10^-3 mm^2/s. Breast values: malignant 1.04 / benign 1.61 (Balkan Med J
#: 2016;33:294, 35 malignant / 23 benign masses, 1.5 T); normal fibroglandular tissue 1.81 (Parsian et al.,
#: Radiology 2012;265:696, b = 0/600); simple cyst 2.5 and muscle 1.45 (see docs: literature values
#: recalled, not re-checked); fat: lipid diffusion ~10^-5 mm^2/s is two orders below water, so fat
#: keeps its (suppressed) signal at every b; blood: intravoxel incoherent motion, pseudo-diffusion
#: D* ~ 10 x 10^-3 (Le Bihan et al., Radiology 1988;168:497), so flowing blood is dark at b >= 150.
ADC_MM2_S: dict[str, float] = {
    "fat": 0.02, "fgt": 1.81, "muscle": 1.45, "skin": 1.45, "blood": 10.0, "myocardium": 1.45,
    "lung": 1.45, "tumor": 1.04, "tumor_core": 2.5, "bone": 0.02, "liver": 1.45, "csf": 3.0, "node": 1.04,
    "cyst": 2.5, "benign": 1.61,
}
#: simple cyst fluid: FIELD.md section 6 "necrosis / cyst" row (T1 2000-3000 ms, T2 300-1000 ms, PD 0.9-1.0);
#: the middle of each range, the same at 1.5 and 3 T (fluid T1/T2 depend little on B0)
CYST_PROPS = TissueProps(2500, 2500, 600, 600, 0.95)
#: share of women with a breast cyst: about one in three at 35-50 years (Berg et al., Radiology 2003;227:183,
#: quoted in docs)
CYST_PREVALENCE = 1.0 / 3.0
#: pathological complete response after neoadjuvant chemotherapy, all subtypes: 22 % (Cortazar et al.,
#: Lancet 2014;384:164, CTNeoBC pooled analysis of 11,955 patients)
PCR_RATE = 0.22
#: between-patient SD of malignant-lesion ADC (10^-3 mm^2/s; the same Balkan Med J 2016 series)
TUMOR_ADC_SD = 0.29
#: mean pre-treatment ADC difference of non-responders minus responders (10^-3 mm^2/s): Park et al.,
#: Radiology 2010;257:56 (lower pre-treatment ADC in responders to NAC); see docs for the value used
RESPONDER_ADC_GAP = 0.12


@dataclass(frozen=True)
class MultiSequenceProtocol:
    """Timing of the eight sequences (ms, degrees, s/mm^2) and the noise of each acquisition.

    ``snr`` is the signal-to-noise ratio of fibroglandular tissue on the unsaturated, pre-contrast,
    b = 0 image of that acquisition; FatSat versions share their non-fat-saturated twin's noise level.
    """

    name: str
    manufacturer: str
    model: str
    b0: float
    t1_tr: float
    t1_te: float
    t1_flip: float
    fatsat: str
    t2_tr: float
    t2_te: float
    dwi_tr: float
    dwi_te: float
    b_values: tuple[float, ...] = B_VALUES
    agent: str = "GADAVIST"
    snr: dict = field(default_factory=lambda: {"t1": 30.0, "t2": 25.0, "dwi": 20.0})

    def to_dict(self) -> dict:
        """The protocol as a plain dict (``dataclasses.asdict``), as ``dataset.json`` records it."""
        return asdict(self)


#: Philips Ingenia 3.0 T breast protocol (the paper's scanner; docs cite each timing): T1 FFE (3-D spoiled
#: gradient echo) at TR 4.6 / TE 2.3 ms (fat and water in phase at 3 T) and 10 degrees, fat-suppressed
#: with SPAIR; T2 TSE TR 4000 / TE 120 ms; DWI single-shot SE-EPI with SPAIR, TR 5000 / TE 70 ms.
PHILIPS_INGENIA_3T = MultiSequenceProtocol(
    name="philips_ingenia_3t", manufacturer="Philips", model="Ingenia", b0=3.0,
    t1_tr=4.6, t1_te=2.3, t1_flip=10.0, fatsat="spair", t2_tr=4000.0, t2_te=120.0, dwi_tr=5000.0, dwi_te=70.0)


# ---- cysts and the response trait ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Cyst:
    """One simple cyst: a sphere of fluid with its centre in patient coordinates (mm) and its radius (mm)."""

    center: np.ndarray   # mm, patient coordinates
    radius: float        # mm


def draw_cysts(ph: Phantom, count: int | None = None) -> list[Cyst]:
    """Simple cysts of patient ``ph`` (stream ``[seed, i, 27]``: the phantom's draws stay as they were).

    With probability :data:`CYST_PREVALENCE` a patient has 1-3 cysts of 6-20 mm diameter, centred in
    the glandular cone of a breast (where cysts arise: terminal duct lobular units); ``count`` forces
    the number (tests).
    """
    rng = np.random.default_rng([ph.seed, ph.patient_index, 27])
    has = rng.random() < CYST_PREVALENCE
    n = int(rng.integers(1, 4)) if has else 0
    n = n if count is None else int(count)
    out = []
    for _ in range(n):
        b = ph.breasts[int(rng.integers(0, 2))]
        t = b.proj * float(rng.uniform(0.25, 0.6))
        x = b.side * (b.cx + t * np.tan(b.tilt)) + float(rng.uniform(-0.35, 0.35)) * b.rx * 0.6
        z = b.zc - t * np.tan(b.droop) + float(rng.uniform(-0.25, 0.25)) * b.rz * 0.6
        y = float(ph.torso_surface_y(np.array([x]))[0]) - t
        out.append(Cyst(np.array([x, y, z]), 0.5 * float(rng.uniform(6.0, 20.0))))
    return out


@dataclass(frozen=True)
class ResponseTrait:
    """A patient's pre-treatment chemosensitivity and what it does.

    ``u`` ~ N(0, 1) sets the tumour's ADC (1.04 + 0.29 u, 10^-3 mm^2/s: higher cellularity, lower ADC)
    and the chance of a pathological complete response, logit p = logit(0.22) - beta u, with beta chosen
    so that responders' mean ADC is :data:`RESPONDER_ADC_GAP` below non-responders' (Park 2010). The
    trait changes diffusion only; the kinetics are the phantom's own.
    """

    u: float
    pcr: bool
    tumor_adc: float


def _beta_for_gap(gap_sd: float) -> float:
    """Logistic slope beta for which E[u | no pCR] - E[u | pCR] = ``gap_sd`` (u ~ N(0, 1)), by quadrature."""
    from scipy.optimize import brentq
    from scipy.special import expit, logit

    u = np.linspace(-6, 6, 2401)
    w = np.exp(-0.5 * u * u)

    def gap(beta: float) -> float:
        p = expit(logit(PCR_RATE) - beta * u)
        return float((u * (1 - p) * w).sum() / ((1 - p) * w).sum() - (u * p * w).sum() / (p * w).sum()) - gap_sd

    return float(brentq(gap, 1e-6, 10.0))


#: the slope implied by Park 2010's ADC gap at the Balkan series' between-patient SD
RESPONSE_BETA = _beta_for_gap(RESPONDER_ADC_GAP / TUMOR_ADC_SD)


def draw_response(ph: Phantom) -> ResponseTrait:
    """The response trait of patient ``ph`` (stream ``[seed, i, 28]``)."""
    from scipy.special import expit, logit

    rng = np.random.default_rng([ph.seed, ph.patient_index, 28])
    u = float(rng.standard_normal())
    p = float(expit(logit(PCR_RATE) - RESPONSE_BETA * u))
    pcr = bool(rng.random() < p)
    adc = float(np.clip(ADC_MM2_S["tumor"] + TUMOR_ADC_SD * u, 0.4, 2.2))
    return ResponseTrait(u, pcr, adc)


# ---- rendering ------------------------------------------------------------------------------------------------
@dataclass
class ExamImages:
    """One rendered exam: ``images[seq]`` is ``(T, S, H, W)`` float32 (T = 1 for 3-D sequences)."""

    images: dict[str, np.ndarray]
    seg: np.ndarray                    # (S, H, W) uint8, SEG_LABELS
    fractions: np.ndarray              # (tissues + cyst, S, H, W)
    tissues: tuple[str, ...]
    affine: np.ndarray
    response: ResponseTrait
    cysts: list[Cyst]
    noise_sigma: dict[str, float]


def _grid(ph: Phantom, size: tuple[int, int], pixel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """In-plane pixel centres: ``size`` = (rows along AP from 8 mm in front of the furthest nipple,
    columns along LR centred on the midline)."""
    h, w = size
    tips = [float(ph.torso_surface_y(np.array([b.side * b.cx]))[0]) - b.proj for b in ph.breasts]
    x = (np.arange(w) - (w - 1) / 2.0) * pixel_mm
    y = min(tips) - 8.0 + np.arange(h) * pixel_mm
    return x.astype(np.float32), y.astype(np.float32)


def _slice_centres(ph: Phantom, slices: int, spacing_mm: float) -> np.ndarray:
    if ph.tumor is not None:
        zc = float(ph.tumor.center[2])
    else:
        zc = float(np.mean([b.zc for b in ph.breasts]))
    return zc + (np.arange(slices) - (slices - 1) / 2.0) * spacing_mm


def _cyst_fraction(cysts: list[Cyst], X, Y, z: float, pix: float) -> np.ndarray:
    f = np.zeros(X.shape, np.float32)
    for c in cysts:
        r = np.sqrt((X - c.center[0]) ** 2 + (Y - c.center[1]) ** 2 + (z - c.center[2]) ** 2)
        f = np.maximum(f, np.clip(0.5 + (c.radius - r) / pix, 0, 1))
    return f


def render_fractions(ph: Phantom, cysts: list[Cyst], size: tuple[int, int] = (64, 96), pixel_mm: float = 3.5,
                     slices: int = 4, spacing_mm: float = 6.0, thickness_mm: float = 4.0
                     ) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """Tissue fractions ``(len(TISSUES) + 1, S, H, W)`` (the last is cyst fluid, displacing what was
    there) and the voxel-to-patient affine (i along LR, j along AP, k along z)."""
    x, y = _grid(ph, size, pixel_mm)
    X, Y = np.meshgrid(x, y)
    zs = _slice_centres(ph, slices, spacing_mm)
    out = np.zeros((len(TISSUES) + 1, slices) + X.shape, np.float32)
    for k, z in enumerate(zs):
        f = ph.render(X, Y, float(z), thickness_mm, pixel_mm)
        cy = _cyst_fraction(cysts, X, Y, float(z), pixel_mm) * (f.sum(axis=0) > 0.5)
        out[:-1, k] = f * (1.0 - cy)
        out[-1, k] = cy
    affine = np.eye(4)
    affine[0, 0], affine[1, 1], affine[2, 2] = pixel_mm, pixel_mm, spacing_mm
    affine[:3, 3] = [x[0], y[0], zs[0]]
    return out, tuple(TISSUES) + ("cyst",), affine


def _props(name: str, b0: float) -> tuple[float, float, float, float, bool]:
    """(T1, T2, T2*, PD, fat) of a tissue at ``b0``."""
    if name == "cyst":
        p = CYST_PROPS
        return p.t1_30, p.t2_30, p.t2_30, p.pd, False
    t1, t2s, pd = tissue_relaxation(name, b0)
    p = TISSUE_PROPS[name]
    t2 = p.t2_15 + (p.t2_30 - p.t2_15) * (b0 - 1.5) / 1.5
    return t1, t2, t2s, pd, p.fat


def tissue_signals(proto: MultiSequenceProtocol, kinetics: dict, tissues: tuple[str, ...],
                   tumor_adc: float) -> dict[str, np.ndarray]:
    """Noise-free signal of each tissue (one row per tissue) on every sequence's time points:
    ``{"dce": (tissues, 6), "fatsatdce": ..., "t2": (tissues, 1), "dwi": (tissues, 4)}``."""
    fat_left = float(fat_residual(proto.fatsat, np.float32(0.0), np.float32(1.0)))
    r1 = relaxivity(proto.agent, proto.b0)
    n = len(tissues)
    dce, fsdce = np.zeros((n, DCE_PHASES)), np.zeros((n, DCE_PHASES))
    t2w, dwi = np.zeros((n, 1)), np.zeros((n, len(proto.b_values)))
    for k, name in enumerate(tissues):
        t1, t2, t2s, pd, fat = _props(name, proto.b0)
        for ph_i in range(DCE_PHASES):
            t = phase_time_s(ph_i)
            conc = 0.0 if name == "cyst" else concentration_mM(name, t, kinetics)
            s = float(spgr_signal(pd, float(t1_with_agent(t1, r1, conc)), t2s, proto.t1_tr, proto.t1_te,
                                  proto.t1_flip))
            dce[k, ph_i] = s
            fsdce[k, ph_i] = s * (fat_left if fat else 1.0)
        t2w[k, 0] = pd * (1 - np.exp(-proto.t2_tr / t1)) * np.exp(-proto.t2_te / t2)
        adc = tumor_adc if name == "tumor" else ADC_MM2_S[name]
        s0 = pd * (1 - np.exp(-proto.dwi_tr / t1)) * np.exp(-proto.dwi_te / t2) * (fat_left if fat else 1.0)
        dwi[k] = s0 * np.exp(-np.asarray(proto.b_values) * adc * 1e-3)
    return {"dce": dce, "fatsatdce": fsdce, "t2": t2w, "dwi": dwi}


def _rician(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    re = clean + rng.normal(0.0, sigma, clean.shape)
    im = rng.normal(0.0, sigma, clean.shape)
    return np.sqrt(re * re + im * im).astype(np.float32)


def wash_maps(fatsat_dce: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(wash-in, wash-out) of a ``(6, S, H, W)`` DCE: S(t_1) - S(t_0) and S(t_1) - S(t_5), clipped at 0."""
    d = np.asarray(fatsat_dce, np.float32)
    return np.clip(d[1] - d[0], 0, None)[None], np.clip(d[1] - d[-1], 0, None)[None]


def render_exam(ph: Phantom, proto: MultiSequenceProtocol = PHILIPS_INGENIA_3T, size: tuple[int, int] = (64, 96),
                pixel_mm: float = 3.5, slices: int = 4, spacing_mm: float = 6.0, noise: bool = True,
                cysts: list[Cyst] | None = None) -> ExamImages:
    """Image patient ``ph`` with the eight sequences of ``proto`` (noise from stream ``[seed, i, 29]``)."""
    cysts = draw_cysts(ph) if cysts is None else cysts
    response = draw_response(ph)
    frac, tissues, affine = render_fractions(ph, cysts, size, pixel_mm, slices, spacing_mm)
    sig = tissue_signals(proto, ph.kinetics, tissues, response.tumor_adc)
    flat = frac.reshape(len(tissues), -1)
    clean = {seq: (s.T @ flat).reshape((s.shape[1],) + frac.shape[1:]).astype(np.float32) for seq, s in sig.items()}
    fgt = tissues.index("fgt")
    # noise of each acquisition: its fibroglandular signal (pre-contrast, unsaturated, b = 0) / SNR
    sigma = {"t1": sig["dce"][fgt, 0] / proto.snr["t1"], "t2": sig["t2"][fgt, 0] / proto.snr["t2"],
             "dwi": sig["dwi"][fgt, 0] / proto.snr["dwi"]}
    rng = np.random.default_rng([ph.seed, ph.patient_index, 29])
    acquire = (lambda x, s: _rician(x, s, rng)) if noise else (lambda x, s: x.astype(np.float32))
    images = {
        "t1": acquire(clean["dce"][:1], sigma["t1"]),          # a separate pre-contrast acquisition
        "fatsatt1": acquire(clean["fatsatdce"][:1], sigma["t1"]),
        "t2": acquire(clean["t2"], sigma["t2"]),
        "dce": acquire(clean["dce"], sigma["t1"]),
        "fatsatdce": acquire(clean["fatsatdce"], sigma["t1"]),
        "dwi": acquire(clean["dwi"], sigma["dwi"]),
    }
    images["washin"], images["washout"] = wash_maps(images["fatsatdce"])
    images = {s: images[s] for s in BREAST_SEQUENCES}
    t_idx, c_idx = tissues.index("tumor"), tissues.index("tumor_core")
    seg = np.zeros(frac.shape[1:], np.uint8)
    seg[frac[-1] > 0.5] = SEG_LABELS["cyst"]
    seg[(frac[t_idx] + frac[c_idx]) > 0.5] = SEG_LABELS["tumor"]
    return ExamImages(images, seg, frac, tissues, affine, response, cysts,
                      {k: float(v) for k, v in sigma.items()})


def fit_adc(dwi: np.ndarray, b_values=B_VALUES, floor: float = 1e-6) -> np.ndarray:
    """ADC (10^-3 mm^2/s) per voxel by the log-linear least-squares fit ln S_b = ln S_0 - b ADC over the
    b-values (the scanner's ADC map); ``dwi`` is ``(len(b_values), ...)``."""
    b = np.asarray(b_values, np.float64)
    logs = np.log(np.maximum(np.asarray(dwi, np.float64), floor)).reshape(len(b), -1)
    bc = b - b.mean()
    slope = (bc[:, None] * (logs - logs.mean(axis=0))).sum(axis=0) / (bc * bc).sum()
    return (-slope * 1e3).reshape(np.asarray(dwi).shape[1:])
