"""Small, valid MR DICOM files for the tests (pydicom only, no physics): a test fixture, not package code.

The realistic simulator lives in :mod:`mridomain.sim`; this module only writes well-formed MR
Image Storage objects with chosen header values and pixels, fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mridomain.errors import InvalidArgumentError

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

#: A GE 1.5 T DBC-like protocol (values as DBC reports them, FIELD.md Sec. 3).
GE_HEADERS: dict[str, Any] = {
    "Manufacturer": "GE MEDICAL SYSTEMS", "ManufacturerModelName": "SIGNA HDx",
    "ScanOptions": ["FAST_GEMS", "SAT_GEMS", "PFP", "FS"], "MagneticFieldStrength": 1.5,
    "PatientPosition": "FFP", "ContrastBolusAgent": "GADAVIST", "AcquisitionMatrix": [0, 448, 448, 0],
    "SliceThickness": 1.1, "FlipAngle": 10, "ReconstructionDiameter": 340, "RepetitionTime": 5.17,
    "EchoTime": 2.37, "SeriesDescription": "ax 3d dyn pre",
}


def write_mr_dicom(path: str | Path, pixels: np.ndarray, *, patient_id: str, study_uid: str,
                   series_uid: str, instance: int, position: float | None = None,
                   headers: dict[str, Any] | None = None, sop_uid: str | None = None,
                   pixel_spacing: float = 0.7) -> Path:
    """Write one 2-D uint16 MR slice with the given identifiers and header values.

    ``position`` is the z of ImagePositionPatient for an axial slice (normal +z); None leaves the
    position tags out. ``headers`` maps DICOM keywords to values (lists for multi-valued tags);
    a value of None leaves that tag out.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    px = np.asarray(pixels)
    if px.ndim != 2:
        raise InvalidArgumentError(f"write_mr_dicom: pixels must be 2-D, got {px.shape}")
    px = np.clip(np.rint(px), 0, 65535).astype(np.uint16)
    sop_uid = sop_uid or generate_uid(entropy_srcs=[series_uid, str(instance), str(path.name)])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "MR"
    ds.PatientID = patient_id
    ds.PatientName = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = int(instance)
    ds.SeriesNumber = 1
    if position is not None:
        ds.ImagePositionPatient = [0.0, 0.0, float(position)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.Rows, ds.Columns = px.shape
    ds.PixelSpacing = [pixel_spacing, pixel_spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    for key, value in (headers or {}).items():
        if value is not None:
            setattr(ds, key, value)
    ds.PixelData = px.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
