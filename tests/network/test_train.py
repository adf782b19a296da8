"""Training: streamed batches, overfitting a tiny batch, resume == uninterrupted, model.pt."""

from __future__ import annotations

import csv
import logging
import multiprocessing
import os
import shutil
import signal

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

from voxloc.errors import InputError
from voxloc.network.batches import BatchKey, EpochBatches, ShardBatches
from voxloc.network.loss import voxel_loss
from voxloc.network.model import build_model, load_checkpoint, read_checkpoint
from voxloc.network.normalise import normalise
from voxloc.network.train import Preempted, train_model
from voxloc.network.validation import LOG_COLUMNS
from voxloc.physics.noise import NoiseModel, to_photons
from voxloc.simulation.settings import SimulationSettings
from voxloc.simulation.shards import read_shard, simulate_shard
from voxloc.voxels import encode

NORM = {"method": "median_background", "scale_photons": 100.0}
OPTIONS = {
    "name": "tiny",
    "epochs": 2,
    "batch_size": 8,
    "arch": {"widths": [8, 8, 8]},
    "resample": "noise_and_drift",
    "progress_interval_s": 0.0,
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two train shards (16 + 12 frames) and one val shard (8 frames) of 16 x 20 pixels."""
    d = tmp_path_factory.mktemp("shards")
    settings = SimulationSettings(height=16, width=20, n_molecules=(2, 5))
    train = [d / "train-0.h5", d / "train-1.h5"]
    for i, (path, n) in enumerate(zip(train, (16, 12), strict=True)):
        simulate_shard(path, n, settings, seed=7, dataset="train", index=i)
    val = d / "val-0.h5"
    simulate_shard(val, 8, settings, seed=7, dataset="val", index=0)
    return {"train": train, "val": [val], "settings": settings}


def test_epoch_batches_shuffle_per_epoch_and_cover_every_frame():
    a = [k.frames for k in EpochBatches(23, 5, seed=1, epoch=0)]
    assert [len(f) for f in a] == [5, 5, 5, 5, 3]
    assert sorted(sum(a, ())) == list(range(23))
    assert a == [k.frames for k in EpochBatches(23, 5, seed=1, epoch=0)]
    assert a != [k.frames for k in EpochBatches(23, 5, seed=1, epoch=1)]
    tail = [k.frames for k in EpochBatches(23, 5, seed=1, epoch=0, start=3)]
    assert tail == a[3:]


def test_batches_read_frames_and_targets_of_the_right_shard(shards):
    ds = ShardBatches(shards["train"], NORM)
    assert len(ds) == 28
    x, t = ds[BatchKey(0, (17, 3))]  # frame 1 of shard 1, then frame 3 of shard 0
    s1, s0 = read_shard(shards["train"][1], 1, 2), read_shard(shards["train"][0], 3, 4)
    np.testing.assert_array_equal(x[0].numpy(), normalise(s1.frames, NORM)[0])
    np.testing.assert_array_equal(x[1].numpy(), normalise(s0.frames, NORM)[0])
    grid = shards["settings"].grid
    np.testing.assert_array_equal(t[0].numpy(), encode(s1.emitters, 1, grid).targets[0])
    np.testing.assert_array_equal(t[1].numpy(), encode(s0.emitters, 1, grid).targets[0])
    assert t[:, :, 0].sum() > 0


def test_resampling_redraws_noise_keeps_targets_and_is_seeded(shards):
    ds = ShardBatches(shards["train"], NORM, resample="noise", seed=3)
    x0, t0 = ds[BatchKey(0, (2, 20))]
    x1, t1 = ds[BatchKey(1, (2, 20))]
    x1b, _ = ShardBatches(shards["train"], NORM, resample="noise", seed=3)[BatchKey(1, (20, 2))]
    assert not torch.equal(x0, x1)
    torch.testing.assert_close(t0, t1, rtol=0, atol=0)
    np.testing.assert_array_equal(x1b.numpy()[::-1], x1.numpy())  # per-frame seeds: order-free
    # same expected image: the re-drawn frame differs from the stored one by noise only
    assert float((x1 - x0).std()) * NORM["scale_photons"] == pytest.approx(np.sqrt(2 * (10 + 9)), rel=0.2)


def test_same_batches_with_a_worker_process(shards):
    ds = ShardBatches(shards["train"], NORM, resample="noise", seed=3)
    sampler = EpochBatches(len(ds), 8, seed=3, epoch=1)
    loaders = [
        torch.utils.data.DataLoader(ds, batch_size=None, sampler=sampler, num_workers=w) for w in (0, 1)
    ]
    for (xa, ta), (xb, tb) in zip(*loaders, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ta, tb)


def test_physical_shards_are_converted_to_photons():
    noise = NoiseModel("physical", em_gain=100.0, sensitivity_e_per_adu=25.0, baseline_adu=100.0)
    adu = np.array([100.0, 104.0, 140.0], dtype=np.float32)  # 4 ADU per photon above 100
    np.testing.assert_allclose(to_photons(adu, noise), [0.0, 1.0, 10.0])
    np.testing.assert_array_equal(to_photons(adu, NoiseModel("paper")), adu)


def test_a_tiny_batch_overfits(shards):
    ds = ShardBatches(shards["train"], NORM)
    x, t = ds[BatchKey(0, (0, 1, 2, 3))]
    torch.manual_seed(0)
    net = build_model({"widths": [16, 16, 16]})
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.9, 0.99))
    losses = []
    for _ in range(150):
        loss = voxel_loss(net.logits(x), t).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def _read_log(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _same_weights(a, b):
    sa, sb = read_checkpoint(a)["state_dict"], read_checkpoint(b)["state_dict"]
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.fixture(scope="module")
def uninterrupted(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    row = train_model(shards["train"], shards["val"], out / "model.pt", out / "log.csv", OPTIONS, seed=11)
    return out, row


def test_training_writes_model_log_and_checkpoint(uninterrupted, shards):
    out, row = uninterrupted
    rows = _read_log(out / "log.csv")
    assert list(rows[0]) == list(LOG_COLUMNS)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [int(r["frames_seen"]) for r in rows] == [28, 56]
    assert 0.0 <= float(rows[-1]["val_jaccard"]) <= 1.0
    assert int(rows[-1]["val_tp"]) + int(rows[-1]["val_fn"]) > 0
    assert row["val_jaccard"] == pytest.approx(float(rows[-1]["val_jaccard"]), rel=1e-5)
    m = load_checkpoint(out / "model.pt", "cpu")
    meta = m.meta
    assert meta["arch"]["widths"] == [8, 8, 8]
    assert meta["grid"]["px_size_nm"] == 192.0
    assert meta["grid"]["plane_z_nm"] == [0.0, 400.0, 800.0, 1200.0]
    assert meta["grid"]["z_range_nm"] == [-200.0, 1400.0]
    assert meta["psf"]["r0_nm"] == 133.0
    assert meta["normalisation"] == NORM
    assert meta["train"]["batch_size"] == 8 and meta["train"]["resample"] == "noise_and_drift"
    assert meta["voxloc_version"] and meta["epochs_done"] == 2 and len(meta["history"]) == 2
    assert "optimizer" not in read_checkpoint(out / "model.pt")  # model.pt: inference only
    assert (out / "checkpoint.pt").exists()
    assert m.predict(read_shard(shards["val"][0]).frames).shape == (8, 4, 4, 16, 20)


def test_resume_after_sigterm_equals_uninterrupted(uninterrupted, shards, tmp_path):
    full, _ = uninterrupted

    def preempt(epoch, batch):
        if (epoch, batch) == (1, 1):  # in the middle of the second epoch
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Preempted):
        train_model(
            shards["train"], shards["val"], tmp_path / "model.pt", tmp_path / "log.csv", OPTIONS, seed=11,
            on_step=preempt,
        )  # fmt: skip
    assert not (tmp_path / "model.pt").exists()
    ckpt = read_checkpoint(tmp_path / "checkpoint.pt")
    assert (ckpt["epoch"], ckpt["batch"]) == (1, 2)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    (tmp_path / "log.csv").unlink()  # Snakemake deletes the outputs of a failed job
    train_model(shards["train"], shards["val"], tmp_path / "model.pt", tmp_path / "log.csv", OPTIONS, seed=11)
    _same_weights(full / "model.pt", tmp_path / "model.pt")
    a, b = _read_log(full / "log.csv"), _read_log(tmp_path / "log.csv")
    for ra, rb in zip(a, b, strict=True):
        for col in ("train_loss", "val_loss", "val_jaccard", "val_error_nm", "val_rmse_z_nm"):
            assert ra[col] == rb[col]


def test_more_epochs_continue_a_finished_run_fewer_and_other_settings_start_afresh(
    uninterrupted, shards, tmp_path, caplog
):
    full, _ = uninterrupted
    one = {**OPTIONS, "epochs": 1}
    args = (shards["train"], shards["val"], tmp_path / "model.pt", tmp_path / "log.csv")
    train_model(*args, one, seed=11)
    shutil.copy(tmp_path / "model.pt", tmp_path / "one-epoch.pt")
    train_model(*args, OPTIONS, seed=11)
    _same_weights(full / "model.pt", tmp_path / "model.pt")
    # fewer epochs than the finished checkpoint holds: it is moved aside, the run starts afresh
    with caplog.at_level(logging.WARNING, logger="voxloc.network.resume"):
        train_model(*args, one, seed=11)
    meta = read_checkpoint(tmp_path / "model.pt")["meta"]
    assert meta["epochs_done"] == 1 and len(meta["history"]) == 1 and len(_read_log(args[3])) == 1
    _same_weights(tmp_path / "one-epoch.pt", tmp_path / "model.pt")
    assert "not resumed: it went past train.epochs = 1 (epoch 2, batch 0)" in caplog.text
    (stale,) = tmp_path.glob("checkpoint.pt.stale-*")
    assert stale.name in caplog.text and read_checkpoint(stale)["epoch"] == 2
    # another seed does not resume from this checkpoint
    train_model(*args, one, seed=12)
    assert len(_read_log(tmp_path / "log.csv")) == 1
    assert read_checkpoint(tmp_path / "model.pt")["meta"]["seed"] == 12
    assert len(list(tmp_path.glob("checkpoint.pt.stale-*"))) == 2


def test_a_complete_checkpoint_of_the_same_run_says_there_is_nothing_to_train(
    uninterrupted, shards, tmp_path, caplog
):
    """A forced rerun of a finished training (same config, same inputs) trains nothing, and says so."""
    full, _ = uninterrupted
    shutil.copy(full / "checkpoint.pt", tmp_path / "checkpoint.pt")
    steps = []
    with caplog.at_level(logging.WARNING, logger="voxloc.network.resume"):
        train_model(
            shards["train"], shards["val"], tmp_path / "model.pt", tmp_path / "log.csv", OPTIONS, seed=11,
            on_step=lambda epoch, batch: steps.append((epoch, batch)),
        )  # fmt: skip
    assert steps == []
    _same_weights(full / "model.pt", tmp_path / "model.pt")
    assert read_checkpoint(tmp_path / "model.pt")["meta"]["epochs_done"] == 2
    ckpt = tmp_path / "checkpoint.pt"
    assert "complete for this config and inputs (2 epochs): nothing to train" in caplog.text
    assert f"delete {ckpt} to retrain" in caplog.text


def _assert_names_the_damaged_shard(exc: InputError, path) -> None:
    msg = str(exc)
    assert msg.startswith(f"{path}: unreadable (") and msg.endswith("; delete it and rerun"), msg
    assert "\n" not in msg


@pytest.mark.parametrize("workers", [0, 1])
def test_a_damaged_shard_stops_training_with_one_line_naming_it(shards, tmp_path, workers, corrupt_middle):
    bad = tmp_path / "shard-0001.h5"
    simulate_shard(bad, 40, shards["settings"], seed=7, dataset="train", index=5)
    assert corrupt_middle(bad)
    opts = {**OPTIONS, "epochs": 1, "num_workers": workers}
    with pytest.raises(InputError) as info:
        train_model(
            [*shards["train"], bad], shards["val"], tmp_path / "model.pt", tmp_path / "log.csv", opts, seed=11
        )
    _assert_names_the_damaged_shard(info.value, bad)
    assert not (tmp_path / "model.pt").exists()
    # its workers are gone (they ignore SIGTERM: a live one would hang the interpreter's exit)
    assert not multiprocessing.active_children()


def test_a_shard_damaged_after_a_finished_training_is_not_resumed_past(
    shards, tmp_path, caplog, corrupt_middle
):
    """The finished checkpoint was made from the shard before the damage: not resumed from,
    so the rerun reads the shard and names it, instead of rewriting the old model."""
    shard = tmp_path / "shard-0001.h5"
    simulate_shard(shard, 40, shards["settings"], seed=7, dataset="train", index=5)
    args = ([*shards["train"], shard], shards["val"], tmp_path / "model.pt", tmp_path / "log.csv")
    one = {**OPTIONS, "epochs": 1}
    train_model(*args, one, seed=11)
    corrupt_middle(shard)
    (tmp_path / "model.pt").unlink()  # Snakemake deletes the outputs before it reruns a job
    with caplog.at_level(logging.WARNING, logger="voxloc.network.resume"), pytest.raises(InputError) as info:
        train_model(*args, one, seed=11)
    _assert_names_the_damaged_shard(info.value, shard)
    why = f"its inputs differ: {shard} changed since (the file was rewritten: mtime_ns differ)"
    assert why in caplog.text
    assert not (tmp_path / "checkpoint.pt").exists()
    assert len(list(tmp_path.glob("checkpoint.pt.stale-*"))) == 1
    assert not (tmp_path / "model.pt").exists()


def test_a_shard_made_again_after_a_finished_training_trains_afresh(shards, tmp_path, caplog):
    """A shard simulated again (same seed: same frames, a new file) is another input: the
    run starts afresh, and gives the same weights, as its batches depend on the frames only."""
    shard = tmp_path / "shard-0001.h5"
    simulate_shard(shard, 12, shards["settings"], seed=7, dataset="train", index=5)
    args = ([shards["train"][0], shard], shards["val"], tmp_path / "model.pt", tmp_path / "log.csv")
    one = {**OPTIONS, "epochs": 1}
    train_model(*args, one, seed=11)
    shutil.copy(tmp_path / "model.pt", tmp_path / "first.pt")
    simulate_shard(shard, 12, shards["settings"], seed=7, dataset="train", index=5)
    steps = []
    with caplog.at_level(logging.WARNING, logger="voxloc.network.resume"):
        train_model(*args, one, seed=11, on_step=lambda epoch, batch: steps.append((epoch, batch)))
    assert steps == [(0, b) for b in range(4)]  # 28 frames in batches of 8: trained again
    assert f"its inputs differ: {shard} changed since" in caplog.text
    _same_weights(tmp_path / "first.pt", tmp_path / "model.pt")


def test_fine_tuning_starts_from_the_earlier_model(uninterrupted, shards, tmp_path):
    full, _ = uninterrupted
    opts = {**OPTIONS, "epochs": 1, "lr": 1e-9, "arch": {"widths": [4]}, "init_from": str(full / "model.pt")}
    train_model(shards["train"], shards["val"], tmp_path / "model.pt", tmp_path / "log.csv", opts, seed=11)
    tuned = read_checkpoint(tmp_path / "model.pt")
    base = read_checkpoint(full / "model.pt")
    assert tuned["meta"]["arch"]["widths"] == [8, 8, 8]  # the earlier model's architecture
    assert tuned["meta"]["init_from"]["path"] == str(full / "model.pt")
    w0, w1 = base["state_dict"]["head.weight"], tuned["state_dict"]["head.weight"]
    assert torch.allclose(w0, w1, atol=1e-6)  # a tiny learning rate barely moves them
    fresh = build_model({"widths": [8, 8, 8]}).state_dict()["head.weight"]
    assert not torch.allclose(fresh, w1, atol=1e-3)
