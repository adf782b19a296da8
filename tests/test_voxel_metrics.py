"""Tests of the voxel confusion matrix and the adjacency breakdown (Tables 4 and 5)."""

from __future__ import annotations

import numpy as np
import pytest

from voxloc.voxel_metrics import adjacency_breakdown, confusion

SHAPE = (2, 4, 8, 8)  # T, P, H, W


def _grids(true_vox, pred_vox):
    t = np.zeros(SHAPE, dtype=np.float32)
    p = np.zeros(SHAPE, dtype=np.float32)
    for v in true_vox:
        t[v] = 1.0
    for v in pred_vox:
        p[v] = 0.9
    return t, p


def _breakdown(true_vox, pred_vox):
    return adjacency_breakdown(*_grids(true_vox, pred_vox))


def test_perfect_prediction():
    vox = [(0, 1, 2, 2), (1, 3, 5, 6)]
    t, p = _grids(vox, vox)
    c = confusion(t, p)
    assert c == {"tp": 2, "fp": 0, "fn": 0, "tn": t.size - 2, "jaccard": 1.0}
    b = adjacency_breakdown(t, p)
    assert b["tp"] == 2 and all(b[k] == 0 for k in b if k != "tp")
    # nothing to find and nothing found
    assert confusion(np.zeros(SHAPE), np.zeros(SHAPE))["jaccard"] == 1.0


def test_confusion_counts_and_5d_input():
    t, p = _grids([(0, 0, 1, 1), (0, 2, 4, 4), (1, 1, 1, 1)], [(0, 0, 1, 1), (0, 2, 4, 5), (1, 3, 7, 7)])
    c = confusion(t, p)
    assert (c["tp"], c["fp"], c["fn"], c["tn"]) == (1, 2, 2, t.size - 5)
    assert c["jaccard"] == pytest.approx(1 / 5)
    # (T, P, 4, H, W) targets/outputs: only channel 0 is used; τ applies to the output
    t5 = np.zeros((*SHAPE[:2], 4, *SHAPE[2:]), dtype=np.float32)
    p5 = np.zeros_like(t5)
    t5[:, :, 0], p5[:, :, 0] = t, p
    p5[:, :, 1:] = 0.99  # ζ channels are ignored
    assert confusion(t5, p5) == c
    assert confusion(t5, p5, tau=0.95)["tp"] == 0


def test_shifted_prediction_is_adjacent1_pair():
    b = _breakdown([(0, 1, 2, 2)], [(0, 1, 2, 3)])
    assert (b["fp"], b["fp_adjacent1"], b["fp_adjacent2"], b["fp_nonadjacent"]) == (1, 1, 0, 0)
    assert (b["fn"], b["fn_adjacent1"], b["fn_adjacent2"], b["fn_nonadjacent"]) == (1, 1, 0, 0)
    # a diagonal neighbour in the next plane is adjacent too (26-neighbourhood)
    b = _breakdown([(0, 1, 2, 2)], [(0, 2, 3, 3)])
    assert b["fp_adjacent1"] == 1 and b["fn_adjacent1"] == 1


def test_fp_next_to_tp_is_adjacent2():
    b = _breakdown([(0, 0, 6, 6)], [(0, 0, 6, 6), (0, 1, 6, 7)])
    assert (b["tp"], b["fp"], b["fp_adjacent2"], b["fp_adjacent1"], b["fp_nonadjacent"]) == (1, 1, 1, 0, 0)
    assert b["fn"] == 0


def test_isolated_fp_and_fn_are_nonadjacent():
    b = _breakdown([(1, 3, 7, 7)], [(1, 0, 0, 0)])
    assert (b["fp_nonadjacent"], b["fn_nonadjacent"]) == (1, 1)
    assert b["fp_adjacent1"] == b["fp_adjacent2"] == b["fn_adjacent1"] == b["fn_adjacent2"] == 0
    # the same voxels in different frames are not adjacent
    b = _breakdown([(0, 1, 2, 2)], [(1, 1, 2, 3)])
    assert (b["fp_nonadjacent"], b["fn_nonadjacent"]) == (1, 1)


def test_fn_next_to_tp_and_non_unique_pairs_are_adjacent2():
    # FN beside a TP (no FP around): adjacent to a voxel estimated positive
    b = _breakdown([(1, 2, 3, 3), (1, 2, 3, 4)], [(1, 2, 3, 3)])
    assert (b["fn"], b["fn_adjacent2"], b["fn_adjacent1"], b["fn_nonadjacent"]) == (1, 1, 0, 0)
    # one FN with two adjacent FPs: no one-to-one correspondence, all Adjacent2
    b = _breakdown([(0, 1, 4, 4)], [(0, 1, 4, 3), (0, 1, 4, 5)])
    assert (b["fp_adjacent1"], b["fp_adjacent2"], b["fn_adjacent1"], b["fn_adjacent2"]) == (0, 2, 0, 1)
    # one FP with two adjacent FNs: likewise
    b = _breakdown([(0, 1, 4, 3), (0, 1, 4, 5)], [(0, 1, 4, 4)])
    assert (b["fp_adjacent1"], b["fp_adjacent2"], b["fn_adjacent1"], b["fn_adjacent2"]) == (0, 1, 0, 2)


def test_combined_grid_rows_sum_to_table4():
    true_vox = [(0, 1, 2, 2), (0, 0, 6, 6), (1, 3, 7, 7), (1, 2, 3, 3), (1, 2, 3, 4)]
    pred_vox = [(0, 1, 2, 3), (0, 0, 6, 6), (0, 1, 6, 7), (1, 0, 0, 0), (1, 2, 3, 3)]
    t, p = _grids(true_vox, pred_vox)
    b = adjacency_breakdown(t, p)
    c = confusion(t, p)
    assert b == {
        "fp": 3,
        "fp_adjacent1": 1,
        "fp_adjacent2": 1,
        "fp_nonadjacent": 1,
        "fn": 3,
        "fn_adjacent1": 1,
        "fn_adjacent2": 1,
        "fn_nonadjacent": 1,
        "tp": 2,
    }
    assert (c["tp"], c["fp"], c["fn"]) == (2, 3, 3)
    assert c["jaccard"] == pytest.approx(2 / 8)
