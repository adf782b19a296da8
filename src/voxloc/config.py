"""Configuration: JSON-schema validation with one-line errors, the sample sheet, and the
translation of config sections into library objects (simulation settings)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pandas as pd
import yaml

from voxloc.errors import ConfigError

if TYPE_CHECKING:  # the workflow imports this module at parse time: keep it light
    pass

__all__ = ["load_schema", "validate", "load_config", "load_samples", "chunk_ranges"]

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "workflow" / "schemas"


def load_schema(path: str | Path) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def _with_defaults(cls):
    """A validator class that fills in ``default`` values while validating (as Snakemake does)."""
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(cls, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _one_line(error: jsonschema.ValidationError, source: str) -> str:
    """The most useful single line for a schema error: file, dotted key, problem."""
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        keys = ", ".join(_key([*error.absolute_path, k]) for k in extra)
        return f"{source}: unknown key {keys}"
    if error.validator == "required":
        return f"{source}: {_key(error.absolute_path)}: {error.message}"
    if error.validator == "oneOf" and isinstance(error.instance, dict):
        return f"{source}: {_key(error.absolute_path)}: give either 'path' or all of plane1..plane4"
    message = error.message.replace("\n", " ")
    if len(message) > 200:
        message = message[:197] + "..."
    return f"{source}: {_key(error.absolute_path)}: {message}"


def validate(data: dict, schema: dict | str | Path, *, source: str) -> dict:
    """Validate ``data`` in place against a JSON schema, filling in defaults.

    Raises :class:`ConfigError` with one line naming ``source``, the dotted key and the problem.
    """
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys, got {type(data).__name__}")
    validator = _Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(_one_line(best, source))
    return data


def load_config(path: str | Path, schema: str | Path | None = None) -> dict:
    """Read and validate a config YAML file (defaults filled in)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    return validate(data or {}, schema or SCHEMA_DIR / "config.schema.yaml", source=str(path))


def load_samples(path: str | Path, schema: str | Path | None = None) -> pd.DataFrame:
    """Read the sample sheet (TSV), validate every row, return it indexed by ``movie``."""
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, comment="#", keep_default_na=False)
    except FileNotFoundError:
        raise ConfigError(f"{path}: sample sheet not found") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a tab-separated sample sheet ({exc})".splitlines()[0]) from None
    table.columns = [c.strip() for c in table.columns]
    if "movie" not in table.columns:
        raise ConfigError(f"{path}: the sample sheet needs a 'movie' column")
    schema_dict = load_schema(schema or SCHEMA_DIR / "movies.schema.yaml")
    numeric = {k for k, v in schema_dict["properties"].items() if v.get("type") == "number"}
    rows = []
    for n, raw in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        row: dict[str, Any] = {}
        for key, value in raw.items():
            value = value.strip()
            if value == "":
                continue
            if key in numeric:
                try:
                    value = float(value)
                except ValueError:
                    raise ConfigError(f"{path}: line {n}: column {key}: {value!r} is not a number") from None
            row[key] = value
        validate(row, schema_dict, source=f"{path}: line {n}")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{path}: the sample sheet lists no movie")
    samples = pd.DataFrame(rows)
    dup = samples["movie"][samples["movie"].duplicated()]
    if len(dup):
        raise ConfigError(f"{path}: movie id {dup.iloc[0]!r} appears more than once")
    return samples.set_index("movie", drop=False)


def chunk_ranges(n_frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """Frame ranges [start, stop) of the localization chunks of a movie (``localize.chunk_frames``
    frames each, the last one may be shorter): one Snakemake job per chunk."""
    return [(s, min(s + chunk_frames, n_frames)) for s in range(0, n_frames, chunk_frames)]
