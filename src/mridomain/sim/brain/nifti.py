"""Write NIfTI volumes so that :func:`mridomain.io.read_nifti` reads back the same voxels and affine.

Arrays given in NIfTI voxel order ``(x, y, z)`` are written as they are; :func:`write_like_image`
takes the ``(S, H, W)`` stack ``read_nifti`` returns (``pixels[s, h, w] = data[w, h, s]``) and
undoes that transpose, so a round trip keeps the orientation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_nifti", "write_like_image"]


def write_nifti(path: str | Path, data: np.ndarray, affine: np.ndarray, dtype=np.float32) -> Path:
    """Write a 3-D ``(x, y, z)`` array with its 4x4 voxel-to-world affine (sform and qform)."""
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    img.set_sform(img.affine, code=1)
    img.set_qform(img.affine, code=1)
    nib.save(img, str(path))
    return path


def write_like_image(path: str | Path, pixels: np.ndarray, affine: np.ndarray, dtype=np.float32) -> Path:
    """Write an ``(S, H, W)`` stack in ``read_nifti``'s order on the grid of ``affine``."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 3:
        raise ValueError(f"expected an (S, H, W) stack, got shape {pixels.shape}")
    return write_nifti(path, np.transpose(pixels, (2, 1, 0)), affine, dtype=dtype)
