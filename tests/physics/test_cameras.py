"""Affine registration matrices (Sect. 4.1) on hand-picked points."""

from __future__ import annotations

import numpy as np
import pytest

from voxloc.physics.cameras import affine_matrix, apply_affine

H, W = 6, 10  # centre (W/2, H/2) = (5, 3)


def test_identity():
    m = affine_matrix(height=H, width=W)
    np.testing.assert_allclose(m, np.eye(3), atol=1e-15)
    pts = np.array([[0.5, 0.5], [9.5, 5.5], [3.2, 1.7]])
    np.testing.assert_allclose(apply_affine(m, pts), pts, atol=1e-12)


def test_flip_x_reverses_columns():
    m = affine_matrix(height=H, width=W, flip="x")
    # x -> W - x: the centre of column 0 (0.5) goes to the centre of column W-1 (W - 0.5)
    pts = np.array([[0.5, 1.5], [0.5, 4.5], [9.5, 2.5], [5.0, 3.0], [2.25, 0.75]])
    want = np.array([[W - 0.5, 1.5], [W - 0.5, 4.5], [0.5, 2.5], [5.0, 3.0], [W - 2.25, 0.75]])
    np.testing.assert_allclose(apply_affine(m, pts), want, atol=1e-12)


def test_flip_y_reverses_rows():
    m = affine_matrix(height=H, width=W, flip="y")
    np.testing.assert_allclose(
        apply_affine(m, [[2.5, 0.5], [2.5, 5.5]]), [[2.5, H - 0.5], [2.5, 0.5]], atol=1e-12
    )


def test_rotation_90_about_centre():
    m = affine_matrix(height=H, width=W, rotation_deg=90.0)
    c = np.array([5.0, 3.0])
    # (x, y) - c = (dx, dy) -> (-dy, dx): +x goes to +y, +y goes to -x
    pts = c + np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, -1.0]])
    want = c + np.array([[0.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 2.0]])
    np.testing.assert_allclose(apply_affine(m, pts), want, atol=1e-12)
    # four quarter turns are the identity
    np.testing.assert_allclose(np.linalg.matrix_power(m, 4), np.eye(3), atol=1e-12)


def test_scale_and_shift():
    m = affine_matrix(height=H, width=W, scale=2.0, shift_px=(0.5, -1.0))
    # scale about the centre (5, 3), then shift: (6, 3) -> (5 + 2, 3) + (0.5, -1) = (7.5, 2)
    np.testing.assert_allclose(
        apply_affine(m, [[6.0, 3.0], [5.0, 4.0]]), [[7.5, 2.0], [5.5, 4.0]], atol=1e-12
    )


def test_flip_is_applied_before_rotation():
    # mirror x then rotate by 90°: (dx, dy) -> (-dx, dy) -> (-dy, -dx)
    m = affine_matrix(height=H, width=W, flip="x", rotation_deg=90.0)
    np.testing.assert_allclose(
        apply_affine(m, [[6.0, 3.0], [5.0, 5.0]]), [[5.0, 2.0], [3.0, 3.0]], atol=1e-12
    )


def test_inverse_round_trip():
    m = affine_matrix(height=H, width=W, flip="x", rotation_deg=1.7, scale=1.003, shift_px=(0.8, -2.1))
    pts = np.random.default_rng(0).uniform(0, 10, size=(50, 2))
    back = apply_affine(np.linalg.inv(m), apply_affine(m, pts))
    np.testing.assert_allclose(back, pts, atol=1e-10)
    # apply_affine broadcasts over leading axes
    assert apply_affine(m, pts.reshape(5, 10, 2)).shape == (5, 10, 2)
    np.testing.assert_allclose(apply_affine(m, pts.reshape(5, 10, 2)).reshape(50, 2), apply_affine(m, pts))


def test_bad_flip():
    with pytest.raises(ValueError, match="flip"):
        affine_matrix(height=H, width=W, flip="xy")
