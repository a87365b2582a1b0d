"""BraTS-layout loading, normalization, splits, and one-line errors on bad input."""
import numpy as np
import pytest

from mridomain.errors import EmptyInputError, ImageReadError, InvalidArgumentError, SchemaMismatchError
from mridomain.sim.brain import write_nifti
from mridomain.synth.apply import parse_inputs
from mridomain.synth.data import (fit_slices, load_dataset, load_subject, normalize_volume, slice_stack,
                                  split_subjects)
from mridomain.synth.model import check_sequences

SEQS = ("t1", "t1ce", "t2", "flair")


def _subject(root, sid, shapes=None, skip=()):
    folder = root / sid
    rng = np.random.default_rng(abs(hash(sid)) % 2 ** 32)
    for s in SEQS:
        if s in skip:
            continue
        shape = (shapes or {}).get(s, (8, 10, 6))
        data = np.zeros(shape, np.float32)
        data[1:-1, 1:-1, 1:-1] = rng.uniform(10, 100, (shape[0] - 2, shape[1] - 2, shape[2] - 2))
        write_nifti(folder / f"{sid}_{s}.nii.gz", data, np.diag([2.0, 2.0, 2.0, 1.0]))
    return folder


def test_load_subject_normalizes_to_unit_range(tmp_path):
    sub = load_subject(_subject(tmp_path, "a"), SEQS)
    assert sub.available == SEQS and sub.shape == (6, 10, 8)       # (S, H, W) = (z, y, x)
    for v in sub.volumes.values():
        assert v.shape == (1, 6, 10, 8) and v.min() == 0.0 and v.max() == 1.0
    assert np.allclose(sub.affine, np.diag([2.0, 2.0, 2.0, 1.0]))


def test_normalize_volume_keeps_background_and_clips():
    v = np.zeros((1, 10, 10), np.float32)
    v[0, 2:8, 2:8] = np.linspace(1, 100, 36).reshape(6, 6)
    out, (lo, hi) = normalize_volume(v)
    assert out[0, 0, 0] == 0 and out.max() == 1.0 and lo == 0.0 and hi < 100


def test_missing_sequence_file_is_a_one_line_error(tmp_path):
    folder = _subject(tmp_path, "b", skip=("flair",))
    with pytest.raises(ImageReadError) as err:
        load_subject(folder, SEQS)
    msg = str(err.value)
    assert "\n" not in msg and "b_flair.nii.gz" in msg and "missing sequence file" in msg
    sub = load_subject(folder, SEQS, allow_missing=True)
    assert sub.available == ("t1", "t1ce", "t2")


def test_shape_mismatch_is_a_one_line_error_naming_the_file(tmp_path):
    folder = _subject(tmp_path, "c", shapes={"t2": (8, 10, 7)})
    with pytest.raises(ImageReadError) as err:
        load_subject(folder, SEQS)
    assert "c_t2.nii.gz" in str(err.value) and "differs from t1" in str(err.value) and "\n" not in str(err.value)


def test_dataset_skips_and_reports_bad_subjects(tmp_path):
    _subject(tmp_path, "good1")
    _subject(tmp_path, "good2")
    _subject(tmp_path, "nofl", skip=("flair",))
    bad = tmp_path / "corrupt"
    bad.mkdir()
    for s in SEQS:
        (bad / f"corrupt_{s}.nii.gz").write_bytes(b"not a nifti file at all")
    (tmp_path / "notes").mkdir()   # a folder without sequence files is not a subject
    data = load_dataset(tmp_path, SEQS, progress=False)
    assert [s.subject_id for s in data.subjects] == ["good1", "good2"]
    reasons = dict(data.skipped)
    assert len(reasons) == 2
    assert any("missing sequence file" in r for r in reasons.values())
    assert any("corrupt_t1.nii.gz" in p for p in reasons)
    with pytest.raises(EmptyInputError):
        load_dataset(tmp_path / "notes", SEQS, progress=False)
    with pytest.raises(EmptyInputError):
        load_dataset(tmp_path / "absent", SEQS, progress=False)


def test_another_sequence_set_is_refused():
    with pytest.raises(SchemaMismatchError, match="another sequence set"):
        check_sequences(["t1", "dwi"], SEQS, "run")


def test_parse_inputs(tmp_path):
    folder = _subject(tmp_path, "d")
    files = parse_inputs([folder / "d_t1.nii.gz", f"t2={folder / 'd_t2.nii.gz'}"], SEQS)
    assert set(files) == {"t1", "t2"}
    with pytest.raises(ImageReadError, match="missing sequence file"):
        parse_inputs([folder / "d_absent_t1.nii.gz"], SEQS)
    with pytest.raises(InvalidArgumentError, match="cannot tell its sequence"):
        parse_inputs([folder / "d_t1.nii.gz", tmp_path / "scan.nii.gz"], SEQS)
    with pytest.raises(SchemaMismatchError):
        parse_inputs([f"dwi={folder / 'd_t1.nii.gz'}"], SEQS)
    with pytest.raises(InvalidArgumentError, match="given twice"):
        parse_inputs([folder / "d_t1.nii.gz", f"t1={folder / 'd_t1.nii.gz'}"], SEQS)


def test_split_fit_and_slice_stack():
    ids = [f"s{k}" for k in range(20)]
    sp = split_subjects(ids, (0.7, 0.1, 0.2), seed=0)
    assert [len(sp[k]) for k in ("train", "val", "test")] == [14, 2, 4]
    assert sorted(sum(sp.values(), [])) == sorted(ids)
    x = np.arange(2 * 5 * 6, dtype=np.float32).reshape(1, 2, 5, 6)
    assert fit_slices(x, (4, 8)).shape == (1, 2, 4, 8)
    assert np.array_equal(fit_slices(x, (5, 6)), x)
    vol = np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1) * np.ones((1, 4, 2, 2), np.float32)
    assert slice_stack(vol, 0, 3)[0, :, 0, 0].tolist() == [0, 0, 1]    # edge slice repeated
    assert slice_stack(vol, 3, 3)[0, :, 0, 0].tolist() == [2, 3, 3]
    assert slice_stack(vol, 2, 1).shape == (1, 1, 2, 2)


def test_memory_mapped_cache(tmp_path):
    _subject(tmp_path / "d", "m1")
    _subject(tmp_path / "d", "m2")
    plain = load_dataset(tmp_path / "d", SEQS, progress=False)
    cached = load_dataset(tmp_path / "d", SEQS, progress=False, cache=tmp_path / "c")
    again = load_dataset(tmp_path / "d", SEQS, progress=False, cache=tmp_path / "c")
    for a, b, c in zip(plain.subjects, cached.subjects, again.subjects):
        for s in SEQS:
            assert isinstance(c.volumes[s], np.memmap) and c.volumes[s].dtype == np.float16
            assert np.allclose(a.volumes[s], b.volumes[s], atol=1e-3) and np.array_equal(b.volumes[s], c.volumes[s])
        assert np.allclose(a.affine, c.affine)
    # a changed source file is read again, not served stale from the cache
    write_nifti(tmp_path / "d" / "m1" / "m1_t2.nii.gz", np.ones((8, 10, 6), np.float32), np.eye(4))
    fresh = load_dataset(tmp_path / "d", SEQS, progress=False, cache=tmp_path / "c").by_id("m1")
    assert (np.asarray(fresh.volumes["t2"]) == 1.0).all()
