"""mridomain.data: IAP schema, archive index, DBC adapter, slice cache (no torch).

``build_index`` reads an archive's headers into one row of acquisition parameters per series;
``prepare_cache`` turns an index into a patient-split, memory-mapped slice dataset;
``mridomain.data.dbc`` reads Duke Breast Cancer MRI's spreadsheets, layout and tumor boxes.
"""
from mridomain.data.schema import (  # noqa: F401  (re-exported)
    DEFAULT_IAPS,
    IAP_NAMES,
    IAPSpec,
    load_iap_config,
    normalize_iaps,
)
from mridomain.data.index import (  # noqa: F401
    IndexResult,
    build_index,
    iter_files,
    load_index,
    print_index_summary,
    write_index,
)
from mridomain.errors import InvalidArgumentError  # noqa: F401  (kept importable from here)
from mridomain.data.splits import split_counts, split_patients  # noqa: F401
from mridomain.data.cache import (  # noqa: F401
    SliceCache,
    normalization_spec,
    normalize_intensity,
    prepare_cache,
    preprocess_slices,
    resize,
    sample_slice_indices,
    write_slice_cache,
)
from mridomain.data.dbc import (  # noqa: F401
    DBCCategories,
    dbc_iap_table,
    dbc_labels_for_index,
    load_category_map,
    read_annotation_boxes,
    read_dbc_features,
    read_path_mapping,
    read_tcia_classic,
    tumor_label,
    tumor_labels,
)

__all__ = [
    "DEFAULT_IAPS", "IAP_NAMES", "IAPSpec", "load_iap_config", "normalize_iaps",
    "IndexResult", "build_index", "iter_files", "load_index", "print_index_summary", "write_index",
    "InvalidArgumentError", "split_counts", "split_patients",
    "SliceCache", "normalization_spec", "normalize_intensity", "prepare_cache", "preprocess_slices", "resize",
    "sample_slice_indices", "write_slice_cache",
    "DBCCategories", "dbc_iap_table", "dbc_labels_for_index", "load_category_map",
    "read_annotation_boxes", "read_dbc_features", "read_path_mapping", "read_tcia_classic",
    "tumor_label", "tumor_labels",
]
