"""mridomain.io: read pixels and headers from DICOM files / series, NIfTI and PNG/JPEG/TIFF."""
from mridomain.io.headers import (
    HEADER_KEYWORDS,
    header_fields_from_dataset,
    is_dicom_file,
    iter_candidate_files,
    open_dicom,
    read_header_fields,
)

__all__ = [
    "HEADER_KEYWORDS",
    "header_fields_from_dataset",
    "is_dicom_file",
    "iter_candidate_files",
    "open_dicom",
    "read_header_fields",
]
