"""Brain anatomy from the MNI152 2009a templates in nilearn's wheel, deformed per subject, with a
glioma-like lesion (necrotic core, enhancing rim, surrounding edema).

The grey- and white-matter maps are tissue probabilities of the ICBM152 2009a nonlinear symmetric
template; CSF is what remains inside nilearn's brain mask (the template thresholded at 0.2), which
fills ventricles and sulci. Everything is loaded from files that ship inside the ``nilearn`` wheel
(``nilearn/datasets/data/``): nothing is downloaded.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from mridomain.sim.brain.physics import BRAIN_TISSUES

__all__ = ["BrainTemplate", "load_template", "SubjectAnatomy", "LesionSpec", "sample_lesion",
           "make_anatomy", "TRUTH_LABELS", "BRATS_LABELS", "GD_TRAIT_THRESHOLD_MM"]

#: Dominant-tissue labels of the ``*_truth.nii.gz`` map (0 = outside the brain).
TRUTH_LABELS: dict[str, int] = {"background": 0, "csf": 1, "gm": 2, "wm": 3, "edema": 4,
                                "enhancing": 5, "necrosis": 6}
#: BraTS segmentation labels: 1 necrotic core (NCR), 2 peritumoral edema (ED), 4 enhancing tumour (ET).
BRATS_LABELS: dict[str, int] = {"necrosis": 1, "edema": 2, "enhancing": 4}
#: The per-subject binary trait ``strong_enhancement``: the rim's Gd concentration lies in the upper
#: half (>= 0.3 mM) of the 0.1-0.5 mM range instead of the lower half. Only T1Gd images Gd, so only
#: one sequence sees it (the downstream label of ``mridomain synth downstream``; docs/simulator.md).
GD_TRAIT_THRESHOLD_MM = 0.3


@dataclass(frozen=True)
class BrainTemplate:
    """Template tissue fractions on the 1 mm MNI grid (x, y, z) and where the brain is."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray          # soft brain fraction (0..1)
    affine: np.ndarray         # 1 mm voxel -> MNI mm
    bbox: tuple[tuple[int, int], ...]   # brain extent, voxel index ranges per axis


@functools.lru_cache(maxsize=2)
def load_template(smooth_mm: float = 0.0) -> BrainTemplate:
    """The MNI152 2009a maps of nilearn at 1 mm, optionally Gaussian-smoothed (``smooth_mm`` sigma)
    so that sampling them on a coarser grid does not alias."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_gm_template, load_mni152_wm_template

    gm_img = load_mni152_gm_template(resolution=1)
    gm = np.asarray(gm_img.get_fdata(), dtype=np.float32)
    wm = np.asarray(load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32)
    brain = np.asarray(load_mni152_brain_mask(resolution=1).get_fdata(), dtype=np.float32)
    if smooth_mm > 0:
        gm, wm, brain = (ndimage.gaussian_filter(a, smooth_mm) for a in (gm, wm, brain))
    gm, wm = np.clip(gm, 0, 1) * brain, np.clip(wm, 0, 1) * brain
    total = gm + wm
    over = total > brain
    scale = np.where(over, brain / np.maximum(total, 1e-6), 1.0).astype(np.float32)
    gm, wm = gm * scale, wm * scale
    csf = np.clip(brain - gm - wm, 0, 1)
    idx = np.nonzero(brain > 0.5)
    bbox = tuple((int(i.min()), int(i.max()) + 1) for i in idx)
    return BrainTemplate(gm, wm, csf, brain, np.asarray(gm_img.affine, dtype=np.float64), bbox)


@dataclass(frozen=True)
class LesionSpec:
    """A glioma-like lesion: radii in mm of the necrotic core, the outer edge of the enhancing rim
    and the outer edge of the edema, its centre (output-grid mm), irregularity and Gd uptake."""

    center_mm: tuple[float, float, float]
    r_core: float
    r_rim: float
    r_edema: float
    irregularity: float
    gd_mM: float

    @property
    def strong_enhancement(self) -> bool:
        """The binary trait: a fair coin picks the upper or lower half of the Gd range, then the
        concentration is uniform within it. That is exactly one uniform draw over 0.1-0.5 mM cut at
        :data:`GD_TRAIT_THRESHOLD_MM`, so it is read off ``gd_mM`` and every seed keeps its images."""
        return self.gd_mM >= GD_TRAIT_THRESHOLD_MM


@dataclass
class SubjectAnatomy:
    """Tissue fractions of one subject on the output grid, shape (x, y, z) each, and its affine."""

    fractions: dict[str, np.ndarray]
    brain: np.ndarray
    gd_mM: np.ndarray                 # gadolinium concentration of the enhancing compartment
    affine: np.ndarray
    voxel_mm: float
    lesion: LesionSpec | None
    params: dict = field(default_factory=dict)

    def truth_labels(self) -> np.ndarray:
        """The dominant compartment per voxel (:data:`TRUTH_LABELS`); background where brain < 0.5."""
        stack = np.stack([self.fractions[t] for t in BRAIN_TISSUES])
        labels = (np.argmax(stack, axis=0) + 1).astype(np.uint8)
        labels[self.brain < 0.5] = 0
        return labels

    def brats_segmentation(self) -> np.ndarray:
        """The BraTS label map (0 background, 1 necrosis, 2 edema, 4 enhancing tumour) of this subject."""
        truth = self.truth_labels()
        seg = np.zeros_like(truth)
        for name, code in BRATS_LABELS.items():
            seg[truth == TRUTH_LABELS[name]] = code
        return seg


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 6) -> np.ndarray:
    """Unit-variance smooth random field with about ``coarse`` bumps along the longest axis: Gaussian
    noise smoothed on a 4x coarser grid, then linearly upsampled (cheap, and smooth at that scale)."""
    step = 4
    small = tuple(int(np.ceil(s / step)) + 1 for s in shape)
    noise = ndimage.gaussian_filter(rng.standard_normal(small), max(shape) / step / coarse / 2.0, mode="wrap")
    noise = (noise - noise.mean()) / (noise.std() + 1e-12)
    up = ndimage.zoom(noise, [(s + step) / g for s, g in zip(shape, small)], order=1, mode="nearest")
    return up[tuple(slice(0, s) for s in shape)].astype(np.float32)


def _output_grid(template: BrainTemplate, voxel_mm: float, margin_mm: float = 6.0
                 ) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape (multiples of 4) and the 1 mm template coordinates of output voxel 0 of a grid that
    covers the brain with ``margin_mm`` to spare."""
    lo = np.array([b[0] for b in template.bbox], dtype=float) - margin_mm
    hi = np.array([b[1] for b in template.bbox], dtype=float) + margin_mm
    n = np.ceil((hi - lo) / voxel_mm / 4.0).astype(int) * 4
    center = (lo + hi) / 2.0
    origin = center - (n - 1) * voxel_mm / 2.0
    return tuple(int(v) for v in n), origin


def sample_lesion(rng: np.random.Generator, wm: np.ndarray, brain: np.ndarray, voxel_mm: float) -> LesionSpec:
    """Draw a lesion centred in deep white matter far enough from the brain surface.

    Sizes follow BraTS-like gliomas: necrotic core radius 4-11 mm, enhancing rim 3-6 mm thick,
    edema reaching 6-18 mm beyond the rim; the enhancing rim's Gd concentration is 0.1-0.5 mM
    (FIELD.md section 6: broken blood-brain barrier).
    """
    r_core = float(rng.uniform(4.0, 11.0))
    r_rim = r_core + float(rng.uniform(3.0, 6.0))
    r_edema = r_rim + float(rng.uniform(6.0, 18.0))
    depth_mm = ndimage.distance_transform_edt(brain > 0.5) * voxel_mm
    ok = (wm > 0.6) & (depth_mm > r_rim + 4.0)
    if not ok.any():
        ok = depth_mm >= depth_mm.max() * 0.8
    candidates = np.argwhere(ok)
    center = candidates[rng.integers(len(candidates))] * voxel_mm
    return LesionSpec(tuple(float(c) for c in center), r_core, r_rim, r_edema,
                      irregularity=float(rng.uniform(0.1, 0.3)), gd_mM=float(rng.uniform(0.1, 0.5)))


def _soft_inside(distance: np.ndarray, radius: float, width: float) -> np.ndarray:
    """Partial-volume membership of ``distance < radius`` with an edge ``width`` mm wide."""
    z = np.clip((distance - radius) / max(width, 1e-3), -50.0, 50.0)
    return (1.0 / (1.0 + np.exp(z))).astype(np.float32)


def make_anatomy(rng: np.random.Generator, voxel_mm: float = 2.0, lesion: bool = True,
                 deform_mm: float = 2.5, scale_range: float = 0.08, rotate_deg: float = 6.0) -> SubjectAnatomy:
    """One subject: the template under a random affine (per-axis scale +-``scale_range``, rotation
    +-``rotate_deg`` about the superior axis) and a smooth displacement field (``deform_mm`` standard
    deviation per axis), sampled on a ``voxel_mm`` grid, with a lesion when ``lesion``."""
    template = load_template(smooth_mm=0.4 * voxel_mm if voxel_mm > 1 else 0.0)
    shape, origin = _output_grid(template, voxel_mm)
    coords = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    pts = coords * voxel_mm + origin.reshape(3, 1, 1, 1).astype(np.float32)   # template voxel (= mm)
    center = origin + (np.array(shape) - 1) * voxel_mm / 2.0
    scales = 1.0 + rng.uniform(-scale_range, scale_range, size=3)
    angle = np.deg2rad(rng.uniform(-rotate_deg, rotate_deg))
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    # output point p looks up the template at A^-1 (p - c) + c + u: the subject is the scaled template
    inv = np.linalg.inv(rot @ np.diag(scales))
    rel = pts - center.reshape(3, 1, 1, 1)
    src = np.einsum("ij,j...->i...", inv, rel) + center.reshape(3, 1, 1, 1)
    for axis in range(3):
        src[axis] += deform_mm * _smooth_field(rng, shape)
    sample = functools.partial(ndimage.map_coordinates, coordinates=src, order=1, mode="constant", cval=0.0)
    gm, wm, csf, brain = (sample(a).astype(np.float32) for a in (template.gm, template.wm,
                                                                   template.csf, template.brain))
    affine = template.affine @ np.array([[voxel_mm, 0, 0, origin[0]], [0, voxel_mm, 0, origin[1]],
                                         [0, 0, voxel_mm, origin[2]], [0, 0, 0, 1.0]])
    fractions = {"csf": csf, "gm": gm, "wm": wm}
    zeros = np.zeros(shape, np.float32)
    gd = zeros.copy()
    spec = None
    if lesion:
        spec = sample_lesion(rng, wm, brain, voxel_mm)
        grid_mm = coords * voxel_mm
        dist = np.sqrt(sum((grid_mm[a] - spec.center_mm[a]) ** 2 for a in range(3)))
        bumpy = dist / (1.0 + spec.irregularity * np.tanh(_smooth_field(rng, shape, coarse=10)))
        edge = 0.5 * voxel_mm
        tumor = _soft_inside(bumpy, spec.r_rim, edge) * brain
        core = _soft_inside(bumpy, spec.r_core, edge) * brain
        # edema spreads further and less regularly than the tumour, and along white matter
        edema_bumpy = dist / (1.0 + 2 * spec.irregularity * np.tanh(_smooth_field(rng, shape, coarse=14)))
        edema_region = np.clip(_soft_inside(edema_bumpy, spec.r_edema, 2 * edge) - tumor, 0, 1)
        keep = 1.0 - tumor
        csf, gm, wm = csf * keep, gm * keep, wm * keep
        edema = wm * edema_region
        wm = wm - edema
        uptake = np.clip(1.0 + 0.3 * _smooth_field(rng, shape, coarse=12), 0.4, 1.6)
        gd = (spec.gd_mM * uptake).astype(np.float32)
        fractions = {"csf": csf, "gm": gm, "wm": wm, "edema": edema.astype(np.float32),
                     "enhancing": (tumor - core).clip(0, 1).astype(np.float32), "necrosis": core}
    for name in BRAIN_TISSUES:
        fractions.setdefault(name, zeros.copy())
    params = {"scale_x": float(scales[0]), "scale_y": float(scales[1]), "scale_z": float(scales[2]),
              "rotation_deg": float(np.rad2deg(angle)), "deform_mm": deform_mm}
    return SubjectAnatomy(fractions, brain, gd, affine, voxel_mm, spec, params)
