"""Quantizers: binary sign codes, multi-bit residual codes, the frozen int8 range, the training sample."""

from __future__ import annotations

import numpy as np
import pytest

from datastores.quantize import (
    Int8Calibration,
    binary_codes,
    hamming_to_score,
    multibit_bytes_per_vector,
    multibit_decode,
    multibit_encode,
    multibit_scores,
)
from indexers.training_sample import BottomK, position, sample_keys


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_binary_codes_are_packed_signs():
    x = np.array([[0.5, -1.0, 0.0, 2.0, -0.1, 0.3, 0.2, -0.2, 1.0, -3.0]], dtype=np.float32)
    codes = binary_codes(x)
    assert codes.shape == (1, 2) and codes.dtype == np.uint8
    assert np.unpackbits(codes, axis=1, count=10).tolist() == [[1, 0, 0, 1, 0, 1, 1, 0, 1, 0]]


def test_hamming_score_is_the_inner_product_of_sign_vectors():
    x, q = unit_rows(50, 64, 1), unit_rows(1, 64, 2)
    signs_x, signs_q = np.where(x > 0, 1.0, -1.0), np.where(q > 0, 1.0, -1.0)
    hamming = np.unpackbits(binary_codes(x) ^ binary_codes(q), axis=1).sum(axis=1)
    np.testing.assert_allclose(hamming_to_score(hamming, 64), (signs_x @ signs_q[0]) / 64, atol=1e-6)


def test_int8_round_trip_is_within_half_a_step_and_clips_outliers():
    sample = unit_rows(500, 32)
    calibration = Int8Calibration.fit(sample)
    codes = calibration.encode(sample)
    assert codes.dtype == np.int8 and codes.min() == -128 and codes.max() == 127
    error = np.abs(calibration.decode(codes) - sample)
    assert np.all(error <= calibration.step / 2 + 1e-6)
    outlier = calibration.high + 5.0
    assert np.all(calibration.encode(outlier[None]) == 127)


def test_int8_calibration_survives_json_exactly():
    import json

    calibration = Int8Calibration.fit(unit_rows(100, 16))
    again = Int8Calibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    x = unit_rows(20, 16, 5)
    assert np.array_equal(calibration.encode(x), again.encode(x))


def test_multibit_first_plane_is_the_binary_code_and_error_shrinks_with_bits():
    x = unit_rows(200, 64)
    errors = []
    for bits in (1, 2, 3, 4):
        planes, scales = multibit_encode(x, bits)
        assert planes.shape == (200, bits, 8) and scales.shape == (200, bits)
        assert np.array_equal(planes[:, 0], binary_codes(x))
        errors.append(float(np.linalg.norm(multibit_decode(planes, scales, 64) - x)))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.3 * errors[0]


def test_multibit_scores_equal_the_decoded_inner_products():
    x, q = unit_rows(30, 48), unit_rows(1, 48, 3)[0]
    planes, scales = multibit_encode(x, 3)
    np.testing.assert_allclose(multibit_scores(q, planes, scales), multibit_decode(planes, scales, 48) @ q,
                               rtol=1e-5, atol=1e-6)
    assert multibit_bytes_per_vector(48, 3) == planes[0].nbytes + scales[0].nbytes


def test_multibit_rejects_zero_bits():
    with pytest.raises(ValueError, match="bits"):
        multibit_encode(unit_rows(2, 8), 0)


def _bottom_k(n: int, size: int, run: int, seed: int = 0) -> list[int]:
    """Rows 0..n-1 offered in runs of ``run`` (task t holds rows t*run ...), sampled; their numbers."""
    sample = BottomK(size, seed)
    for task, lo in enumerate(range(0, n, run)):
        rows = np.arange(lo, min(n, lo + run))
        sample.add(position(task, len(rows)), rows)
    drawn = sample.sample()
    return [] if drawn is None else drawn.tolist()


def test_bottom_k_sample_is_seeded_uniform_and_in_stream_order():
    sample = _bottom_k(10_000, 500, 64)
    assert len(sample) == 500 and sample == sorted(sample) and len(set(sample)) == 500
    assert sample != _bottom_k(10_000, 500, 64, seed=1)
    # drawn across the whole stream, not from its start
    assert np.histogram(sample, bins=5, range=(0, 10_000))[0].min() > 60
    assert _bottom_k(7, 500, 3) == list(range(7))
    assert _bottom_k(0, 5, 3) == []
    # the sample is the rows of smallest key, whatever the order of trimming
    keys = {task * 64 + row: int(sample_keys(position(task, 64))[row]) for task in range(157) for row in range(64)}
    smallest = sorted(r for r in keys if r < 10_000)
    smallest = sorted(sorted(smallest, key=keys.get)[:500])
    assert sample == smallest