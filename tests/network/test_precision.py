"""``localize.precision: auto`` on a CPU chooses by measurement (voxloc.network.precision)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_model import META, _frames, _trained_tiny_net  # noqa: E402  (this folder, on sys.path)

from voxloc.network import precision as prec  # noqa: E402
from voxloc.network.model import Detections, load_checkpoint, save_checkpoint  # noqa: E402


def _detections(keys, zeta) -> Detections:
    keys = np.asarray(keys, np.int64).reshape(-1, 4)
    return Detections(*keys.T, np.full(len(keys), 0.9), np.asarray(zeta, float).reshape(-1, 3))


def test_agreement_is_the_voxel_jaccard_and_the_zeta_rms_of_the_common_voxels():
    ref = _detections([[0, 0, 1, 1], [0, 1, 2, 3], [1, 3, 4, 5]], [[0.5] * 3, [0.2] * 3, [0.7] * 3])
    other = _detections([[1, 3, 4, 5], [0, 0, 1, 1], [2, 0, 0, 0]], [[0.7, 0.7, 0.73], [0.5] * 3, [0.1] * 3])
    jaccard, rms = prec.agreement(ref, other)
    assert jaccard == pytest.approx(2 / 4)
    assert rms == pytest.approx(np.sqrt(0.03**2 / 6))
    assert prec.agreement(_detections([], []), _detections([], [])) == (1.0, 0.0)
    assert prec.agreement(ref, _detections([], [])) == (0.0, 0.0)


@pytest.fixture
def float32_model(tmp_path):
    save_checkpoint(tmp_path / "model.pt", _trained_tiny_net(), META)
    return load_checkpoint(tmp_path / "model.pt", "cpu", "float32")


def test_every_candidate_is_measured_and_the_chosen_one_agrees(float32_model):
    frames = _frames(shape=(4, 4, 37, 53))
    tau = float(np.quantile(float32_model.predict(frames)[:, :, 0], 0.9))
    chosen, trials = prec.measure_precision(float32_model, frames, tau)
    assert [t.precision for t in trials] == list(prec.CPU_CANDIDATES)
    assert (trials[0].shared_voxels, trials[0].zeta_rms) == (1.0, 0.0)
    assert trials[0].jaccard == trials[0].jaccard_float32 == trials[1].jaccard_float32
    assert all(t.frames_per_s > 0 for t in trials)
    by_name = {t.precision: t for t in trials}
    assert by_name[chosen.precision].agrees
    assert by_name["bfloat16"].shared_voxels > 0.8 and by_name["int8"].shared_voxels > 0.8  # a random net
    assert "frames/s" in str(trials[1]) and ("kept" in str(trials[1]) or "rejected" in str(trials[1]))


def test_the_fastest_agreeing_candidate_wins_by_a_margin(float32_model, monkeypatch):
    """Timings set by hand: a candidate that is less accurate never wins, however fast; one
    that is as accurate must be MIN_GAIN faster than the more precise choice."""
    frames = _frames(shape=(2, 4, 37, 53))
    speed = {"float32": 10.0, "bfloat16": 10.5, "int8": 30.0}
    real_time = prec._time

    def fake_time(model, x, tau, repeats):
        _, d = real_time(model, x, tau, 0)
        return speed[model.precision], d

    monkeypatch.setattr(prec, "_time", fake_time)
    chosen, _ = prec.measure_precision(float32_model, frames, 0.5)
    assert chosen.precision == "int8"  # bfloat16's 5 % is no reason; int8's 3x is
    monkeypatch.setattr(prec, "MAX_JACCARD_LOSS", -1.0)  # nothing is as good as float32
    chosen, trials = prec.measure_precision(float32_model, frames, 0.5)
    assert chosen.precision == "float32" and not any(t.agrees for t in trials[1:])
    with pytest.raises(ValueError, match="float32 model on a CPU"):
        prec.measure_precision(chosen.__class__(chosen.net, chosen.meta, "cpu", "int8"), frames, 0.5)


def test_the_choice_is_kept_beside_the_model_for_this_machine_type(float32_model, tmp_path, monkeypatch):
    """The first chunk measures and writes the choice; the next ones on this machine type
    take it without timing (the chunks of a movie computed alike); another model measures."""
    frames = _frames(shape=(2, 4, 37, 53))
    cache = tmp_path / "model.precision.json"
    first, line = prec.auto_precision(float32_model, frames, 0.5, cache=cache, model_sha256="aa")
    (record,) = json.loads(cache.read_text())["entries"]
    assert record["precision"] == first.precision and record["key"]["model_sha256"] == "aa"
    assert [t["precision"] for t in record["trials"]] == list(prec.CPU_CANDIDATES)
    assert "frames/s" in line

    def no_timing(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(prec, "measure_precision", no_timing)
    again, line = prec.auto_precision(float32_model, frames, 0.5, cache=cache, model_sha256="aa")
    assert again.precision == first.precision and "measured before" in line
    with pytest.raises(AssertionError, match="measured again"):
        prec.auto_precision(float32_model, frames, 0.5, cache=cache, model_sha256="bb")
    monkeypatch.undo()
    prec.auto_precision(float32_model, frames[:1], 0.5, cache=cache, model_sha256="aa")  # another shape
    keys = [e["key"]["frames"][0] for e in json.loads(cache.read_text())["entries"]]
    assert keys == [2, 1]  # kept side by side: the movie's entry is not overwritten
    monkeypatch.setattr(prec, "measure_precision", no_timing)
    assert (
        "measured before"
        in prec.auto_precision(float32_model, frames, 0.5, cache=cache, model_sha256="aa")[1]
    )
    cache.write_text("{not json")
    with pytest.raises(AssertionError, match="measured again"):  # a damaged file: measured anew
        prec.auto_precision(float32_model, frames, 0.5, cache=cache, model_sha256="aa")
