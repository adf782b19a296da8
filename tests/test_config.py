"""Config and sample-sheet validation: defaults, one-line errors naming the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config

from voxloc import config as vconfig
from voxloc.errors import ConfigError
from voxloc.simulation.settings import simulation_settings

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def test_shipped_configs_are_valid():
    cfg = vconfig.load_config(ROOT / "config" / "config.yaml")
    assert cfg["grid"]["px_size_nm"] == 192.0
    assert cfg["simulation"]["noise"] == "paper"
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    vconfig.validate(paper, SCHEMA, source="config/paper.yaml")
    n = sum(
        d["shards"] * d["frames_per_shard"]
        for k, d in paper["simulation"]["datasets"].items()
        if k == "train"
    )
    assert n == 100_000  # Table 3 / Sect. 4.2
    # the paper's setting: the Gaussian of Table 2, brightness w in [0.3, 1] as photons 4 w a' / s^2
    assert paper["psf"]["model"] == "gaussian" and paper["psf"]["source"] == "table2"
    a_prime, s = paper["psf"]["table2"]["a_prime"], 192.0
    assert paper["simulation"]["photons"] == pytest.approx(
        [4 * w * a_prime / s**2 for w in (0.3, 1.0)], abs=0.05
    )


def test_defaults_are_filled_in():
    cfg = vconfig.validate({}, SCHEMA, source="x.yaml")
    assert cfg["psf"]["table2"] == {
        "a_prime": 5.0e7,
        "b": 0.0,
        "r0_nm": 133.0,
        "D_nm": 302.0,
        "A": 7.37e-4,
        "B": 6.27e-3,
    }
    assert cfg["grid"]["plane_z_nm"] == [0.0, 400.0, 800.0, 1200.0]
    assert cfg["simulation"]["noise_params"]["background"] == 10.0
    assert cfg["simulation"]["noise_params"]["read_noise_var"] == 9.0
    # brightness in photons summed over the planes: the paper's w in [0.3, 1]
    assert cfg["simulation"]["photons"] == [1627.6, 5425.3]
    assert cfg["psf"]["model"] == "spline" and cfg["psf"]["source"] == "calibration"
    assert "bead_weight" not in cfg["calibration"]
    mic = cfg["demo"]["microscope"]
    assert mic["psf_model"] == "vectorial" and mic["transmission"] == [0.27, 0.22, 0.28, 0.23]
    assert cfg["demo"]["beads"]["photons"] == [85000.0, 170000.0]
    assert cfg["demo"]["movies"]["photons"] == [1700.0, 5600.0]
    s = simulation_settings(cfg["grid"], cfg["psf"], cfg["simulation"], "train")
    assert s.grid.height == s.grid.width == 64
    assert s.n_molecules == (50, 50)
    assert s.photons_range == (1627.6, 5425.3)
    assert s.physics.noise.kind == "paper"
    assert s.physics.model == "gaussian" and s.physics.transmission == (0.25,) * 4


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"simulation": {"bogus": 1}}, "x.yaml: unknown key simulation.bogus"),
        ({"grid": {"px_size_nm": "abc"}}, "x.yaml: grid.px_size_nm: 'abc' is not of type 'number'"),
        ({"simulation": {"noise": "foo"}}, "x.yaml: simulation.noise: 'foo' is not one of"),
        # the keys that brightness in molecule weights had are gone
        ({"simulation": {"weight_range": [0.3, 1.0]}}, "x.yaml: unknown key simulation.weight_range"),
        ({"calibration": {"bead_weight": 22.5}}, "x.yaml: unknown key calibration.bead_weight"),
        ({"psf": {"model": "vectorial"}}, "x.yaml: psf.model: 'vectorial' is not one of"),
        ({"grid": {"plane_z_nm": [0, 400, 800]}}, "x.yaml: grid.plane_z_nm:"),
        (
            {"simulation": {"datasets": {"t": {"shards": 1}}}},
            "x.yaml: simulation.datasets.t: 'frames_per_shard'",
        ),
    ],
)
def test_bad_config_is_one_line_naming_the_key(data, expected):
    with pytest.raises(ConfigError) as info:
        vconfig.validate(data, SCHEMA, source="x.yaml")
    msg = str(info.value)
    assert msg.startswith(expected)
    assert "\n" not in msg


def test_spline_model_needs_the_calibration():
    # the spline PSF is measured from the beads: there is no Table 2 spline
    with pytest.raises(ConfigError, match="psf.source") as info:
        vconfig.validate({"psf": {"model": "spline", "source": "table2"}}, SCHEMA, source="x.yaml")
    assert "\n" not in str(info.value)
    cfg = vconfig.validate({"psf": {"model": "gaussian", "source": "table2"}}, SCHEMA, source="x.yaml")
    assert cfg["psf"]["model"] == "gaussian"


def test_inverted_photon_range_is_a_config_error():
    cfg = vconfig.validate({"simulation": {"photons": [5000.0, 1000.0]}}, SCHEMA, source="x.yaml")
    with pytest.raises(ConfigError, match="photons"):
        simulation_settings(cfg["grid"], cfg["psf"], cfg["simulation"])


def test_inverted_molecule_range_is_a_config_error():
    cfg = vconfig.validate({"simulation": {"n_molecules": [60, 10]}}, SCHEMA, source="x.yaml")
    with pytest.raises(ConfigError, match="n_molecules"):
        simulation_settings(cfg["grid"], cfg["psf"], cfg["simulation"])


def test_bad_yaml_names_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("grid: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: not valid YAML"):
        vconfig.load_config(p)


HEADER = "movie\tpath\tplane1\tplane2\tplane3\tplane4\tground_truth\toffset_adu\tadu_per_photon\n"


def test_sample_sheet_both_layouts(tmp_path):
    p = tmp_path / "movies.tsv"
    p.write_text(
        HEADER + "a\tm.tif\t\t\t\t\t\t100\t4\n" + "b\t\t1.tif\t2.tif\t3.tif\t4.tif\tgt.parquet\t\t\n"
    )
    s = vconfig.load_samples(p)
    assert list(s.index) == ["a", "b"]
    assert s.loc["a", "offset_adu"] == 100.0
    assert s.loc["b", "plane3"] == "3.tif"


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            "a\tm.tif\t1.tif\t2.tif\t3.tif\t4.tif\t\t\t\n",
            "line 2: (top level): give either 'path' or all of plane1..plane4",
        ),
        ("a\t\t1.tif\t2.tif\t\t4.tif\t\t\t\n", "line 2: (top level): give either 'path'"),
        ("a\tm.tif\t\t\t\t\t\tabc\t\n", "line 2: column offset_adu: 'abc' is not a number"),
        ("a b\tm.tif\t\t\t\t\t\t\t\n", "line 2: movie: 'a b' does not match"),
        (
            "a\tm.tif\t\t\t\t\t\t\t0\n",
            "line 2: adu_per_photon: 0.0 is less than or equal to the minimum of 0",
        ),
    ],
)
def test_bad_sample_sheet_rows(tmp_path, row, expected):
    p = tmp_path / "movies.tsv"
    p.write_text(HEADER + row)
    with pytest.raises(ConfigError) as info:
        vconfig.load_samples(p)
    assert str(info.value) == f"{p}: {expected}" or str(info.value).startswith(f"{p}: {expected}")
    assert "\n" not in str(info.value)


def test_duplicate_movie_and_missing_sheet(tmp_path):
    p = tmp_path / "movies.tsv"
    p.write_text(HEADER + "a\tm.tif\t\t\t\t\t\t\t\n" + "a\tn.tif\t\t\t\t\t\t\t\n")
    with pytest.raises(ConfigError, match="movie id 'a' appears more than once"):
        vconfig.load_samples(p)
    with pytest.raises(ConfigError, match="sample sheet not found"):
        vconfig.load_samples(tmp_path / "nope.tsv")


BEADS = {"path": "b.tif", "z_step_nm": 50.0, "offset_adu": 0.0, "adu_per_photon": 1.0}


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        # --config localise={}: Snakemake's merge of config/config.yaml, then --config
        (
            [("config/config.yaml", {"seed": 1}), ("--config", {"localise": {}})],
            "--config: unknown key localise (did you mean localize?)",
        ),
        (
            [("config/config.yaml", {}), ("night.yaml", {"train": {"epoch": 3}})],
            "night.yaml: unknown key train.epoch (did you mean epochs?)",
        ),
        (
            [
                ("config/config.yaml", {"calibration": {"beads": BEADS}}),
                ("b.yaml", {"calibration": {"beads": {"z_stepnm": 5}}}),
            ],
            "b.yaml: unknown key calibration.beads.z_stepnm (did you mean z_step_nm?)",
        ),
        (
            [("a.yaml", {"resources": {"train_modle": {"threads": 2}}}), ("b.yaml", {})],
            "a.yaml: unknown key resources.train_modle (did you mean train_model?)",
        ),
        ([("a.yaml", {"simulation": {"bogus": 1}})], "a.yaml: unknown key simulation.bogus"),  # nothing close
        # a bad value: the layer that set it, not the first file
        (
            [("a.yaml", {"localize": {"tau": 0.4}}), ("b.yaml", {"localize": {"tau": 2.0}})],
            "b.yaml: localize.tau: 2.0 is greater than",
        ),
    ],
)
def test_config_error_names_the_layer_that_set_the_key_and_the_closest_key(layers, expected):
    merged: dict = {}
    for _, layer in layers:
        update_config(merged, copy.deepcopy(layer))
    with pytest.raises(ConfigError) as info:
        vconfig.validate(merged, SCHEMA, source="all of them", layers=layers)
    msg = str(info.value)
    assert msg.startswith(expected), msg
    if "did you mean" not in expected:
        assert "did you mean" not in msg
    assert "\n" not in msg


def test_key_set_by_no_layer_names_the_source():
    """A key whose value is the schema's default was set by no file: the source names them all."""
    layers = [("a.yaml", {"train": {"val_dataset": "val"}})]
    assert vconfig.origin(layers, ["train", "val_dataset"], "a.yaml, b.yaml") == "a.yaml"
    assert vconfig.origin(layers, ["train", "epochs"], "a.yaml, b.yaml") == "a.yaml, b.yaml"
    assert vconfig.origin([("a.yaml", {"x": [1, 2]}), ("b.yaml", {"x": [3]})], ["x", 0], "?") == "b.yaml"


def test_whole_number_floats_of_integer_keys_become_ints():
    """chunk_frames: 6.0 or frames_per_shard: 10.0 passed the schema (JSON Schema counts 6.0
    as an integer) and then failed in range(): they are read as the ints they are."""
    data = {
        "localize": {"chunk_frames": 6.0, "batch_frames": 8.0},  # batch_frames: oneOf int | auto
        "simulation": {"datasets": {"train": {"shards": 2.0, "frames_per_shard": 10.0}}},
        "sweeps": {"speed": {"sizes_px": [16.0, 32], "frames": [4, 4.0]}},
    }
    cfg = vconfig.validate(data, SCHEMA, source="x.yaml")
    values = [
        cfg["localize"]["chunk_frames"],
        cfg["localize"]["batch_frames"],
        cfg["simulation"]["datasets"]["train"]["shards"],
        cfg["simulation"]["datasets"]["train"]["frames_per_shard"],
        *cfg["sweeps"]["speed"]["sizes_px"],
        *cfg["sweeps"]["speed"]["frames"],
    ]
    assert values == [6, 8, 2, 10, 16, 32, 4, 4]
    assert all(type(v) is int for v in values)
    assert vconfig.chunk_ranges(12, cfg["localize"]["chunk_frames"]) == [(0, 6), (6, 12)]
    assert type(cfg["grid"]["px_size_nm"]) is float  # a number key keeps its float


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"localize": {"chunk_frames": 6.5}}, "x.yaml: localize.chunk_frames: 6.5 is not of type 'integer'"),
        (
            {"localize": {"chunk_frames": True}},
            "x.yaml: localize.chunk_frames: True is not of type 'integer'",
        ),
        (
            {"simulation": {"datasets": {"t": {"shards": 1, "frames_per_shard": 0.5}}}},
            "x.yaml: simulation.datasets.t.frames_per_shard: 0.5 is not of type 'integer'",
        ),
    ],
)
def test_fractional_floats_of_integer_keys_are_errors(data, expected):
    with pytest.raises(ConfigError) as info:
        vconfig.validate(data, SCHEMA, source="x.yaml")
    assert str(info.value) == expected
