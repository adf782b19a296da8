"""Config and sample-sheet validation: defaults, one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

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
    s = simulation_settings(cfg["grid"], cfg["psf"], cfg["simulation"], "train")
    assert s.grid.height == s.grid.width == 64
    assert s.n_molecules == (50, 50)
    assert s.physics.noise.kind == "paper"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"simulation": {"bogus": 1}}, "x.yaml: unknown key simulation.bogus"),
        ({"grid": {"px_size_nm": "abc"}}, "x.yaml: grid.px_size_nm: 'abc' is not of type 'number'"),
        ({"simulation": {"noise": "foo"}}, "x.yaml: simulation.noise: 'foo' is not one of"),
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
