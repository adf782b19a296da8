"""Tests of the voxel confusion matrix and the adjacency breakdown (Tables 4 and 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from voxloc.evaluation.voxel_metrics import adjacency_breakdown, confusion, evaluate_shards
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel
from voxloc.physics.psf import PSFParams
from voxloc.simulation.settings import SimulationSettings, simulation_settings
from voxloc.simulation.shards import read_shard, simulate_shard
from voxloc.voxels import encode

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


def test_evaluate_shards_streams_chunks_and_thresholds(tmp_path):
    """A predictor that returns the true labels at ĉ = 0.7 and one shifted detection: exact
    counts at τ = 0.5 and τ = 0.9, whatever the chunking."""
    physics = Microscope(
        PSFParams(),
        (0.0, 400.0, 800.0, 1200.0),
        160.0,
        NoiseModel("physical", background=4.0, read_noise_var=2.0, em_gain=10.0, baseline_adu=100.0),
    )
    settings = SimulationSettings(
        physics,
        height=12,
        width=12,
        n_molecules=(2, 5),
        photons_range=(2000.0, 4500.0),
        drift_max_nm=0.0,
    )
    paths = [tmp_path / f"s{i}.h5" for i in range(2)]
    for i, p in enumerate(paths):
        simulate_shard(p, 5, settings, seed=3, dataset="val", index=i)
    truths = [encode(read_shard(p).emitters, 5, settings.grid).targets for p in paths]
    n_true = sum(int((t[:, :, 0] > 0.5).sum()) for t in truths)
    # chunks of 2 frames: 3 chunks per 5-frame shard
    chunks = [t[s : s + 2] for t in truths for s in range(0, 5, 2)]
    outputs = []
    for c in chunks:
        o = c.copy()
        o[:, :, 0] *= 0.7
        outputs.append(o)
    # one extra detection in the first frame of the first chunk, far from every molecule
    free = np.argwhere(ndimage.maximum_filter(outputs[0][0, :, 0] > 0, size=3, mode="constant") == 0)[0]
    outputs[0][0, free[0], 0, free[1], free[2]] = 0.95
    feed = iter(outputs)
    table = evaluate_shards(paths, lambda frames: next(feed), (0.5, 0.9), chunk_frames=2)
    assert next(feed, None) is None  # every chunk predicted exactly once
    at5, at9 = table.set_index("tau").loc[0.5], table.set_index("tau").loc[0.9]
    assert (at5["tp"], at5["fp"], at5["fn"]) == (n_true, 1, 0)
    assert at5["fp_nonadjacent"] == 1 and at5["jaccard"] == pytest.approx(n_true / (n_true + 1))
    assert (at9["tp"], at9["fp"], at9["fn"]) == (0, 1, n_true)
    assert at9["n_frames"] == 10 and at5["tn"] == 10 * 4 * 144 - n_true - 1


def test_nothing_to_find_and_nothing_found_gives_nan_everywhere(tmp_path):
    """TP + FP + FN = 0: the voxel Jaccard index is undefined (NaN) in the confusion matrix,
    the shard tables (Tables 4 and 5) and the network's validation alike."""
    import torch

    from voxloc.network.validation import evaluate

    c = confusion(np.zeros(SHAPE), np.zeros(SHAPE))
    assert (c["tp"], c["fp"], c["fn"], c["tn"]) == (0, 0, 0, math.prod(SHAPE))
    assert math.isnan(c["jaccard"])

    # frames without molecules (the config sections' API: stable whatever the settings' fields)
    settings = simulation_settings(
        {"px_size_nm": 160.0, "plane_z_nm": [0.0, 400.0, 800.0, 1200.0]},
        {"table2": PSFParams().to_dict(), "integrate_pixels": False},
        {
            "frame_size": [12, 12],
            "n_molecules": [0, 0],
            "photons": [2000.0, 4500.0],
            "drift_max_nm": 0.0,
            "noise": "physical",
            "noise_params": {
                "background": 4.0,
                "read_noise_var": 2.0,
                "em_gain": 10.0,
                "baseline_adu": 100.0,
            },
        },
    )
    simulate_shard(tmp_path / "empty.h5", 3, settings, seed=1, dataset="val", index=0)
    g = settings.grid
    nothing = np.zeros((3, g.n_planes, 4, g.height, g.width), dtype=np.float32)
    row = evaluate_shards([tmp_path / "empty.h5"], lambda frames: nothing, (0.5,)).iloc[0]
    assert (row["tp"], row["fp"], row["fn"], row["n_molecules"]) == (0, 0, 0, 0)
    assert math.isnan(row["jaccard"]) and math.isnan(row["precision"]) and math.isnan(row["recall"])

    class Silent(torch.nn.Module):  # ĉ = sigmoid(-20) everywhere: nothing found
        def logits(self, x):
            return torch.full((x.shape[0], g.n_planes, 4, g.height, g.width), -20.0)

    frames = torch.zeros(2, g.n_planes, g.height, g.width)
    targets = torch.zeros(2, g.n_planes, 4, g.height, g.width)
    val = evaluate(Silent(), [(frames, targets)], g, device=torch.device("cpu"), amp=False)
    assert (val["val_tp"], val["val_fp"], val["val_fn"]) == (0, 0, 0)
    assert math.isnan(val["val_jaccard"]) and math.isnan(val["val_error_nm"])
