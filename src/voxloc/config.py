"""Configuration: JSON-schema validation with one-line errors (naming the config layer that
set the key), the sample sheet, and the frame chunks of a movie. The workflow imports this
module at parse time: it imports no stage (:mod:`voxloc.simulation.settings` turns config
sections into simulation settings)."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import yaml

from voxloc.errors import ConfigError

__all__ = ["load_schema", "validate", "origin", "load_config", "load_samples", "chunk_ranges"]

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

    # "integer" is an int (JSON Schema also counts 6.0): validate() turns a whole-number float
    # of an integer key into an int, so that the code downstream gets the int it expects
    strict = cls.TYPE_CHECKER.redefine("integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool))
    return jsonschema.validators.extend(cls, {"properties": set_defaults}, type_checker=strict)


_Validator = _with_defaults(jsonschema.Draft202012Validator)

#: a config layer: (where it came from, e.g. a file name or ``--config``; its mapping)
Layer = tuple[str, Mapping]


def origin(layers: Sequence[Layer], path: Sequence, default: str) -> str:
    """The name of the last of ``layers`` (in merge order, later ones win) that sets the key
    ``path``, i.e. where its value came from; ``default`` when none does (a schema default)."""
    for name, node in reversed(layers):
        for key in path:
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and isinstance(key, int) and key < len(node):
                node = node[key]
            else:
                break
        else:
            return name
    return default


def _whole_floats_to_int(data: dict, errors) -> bool:
    """Replace, in ``data``, every whole-number float that an error finds not an integer
    (also inside ``oneOf`` branches) by the int; True when something was replaced."""
    fixed = False
    todo = list(errors)
    while todo:
        error = todo.pop()
        todo.extend(error.context or ())
        types = error.validator_value if error.validator == "type" else ()
        types = [types] if isinstance(types, str) else types
        value = error.instance
        if "integer" in types and isinstance(value, float) and value.is_integer() and error.absolute_path:
            *parents, last = error.absolute_path
            node = data
            for key in parents:
                node = node[key]
            node[last] = int(value)
            fixed = True
    return fixed


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _one_line(error: jsonschema.ValidationError, source: str, layers: Sequence[Layer] = ()) -> str:
    """The most useful single line for a schema error: file, dotted key, problem. With
    ``layers``, the file (or ``--config``) is the one that set the key."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        parts = []
        for extra in sorted(set(error.instance) - set(known)):
            close = difflib.get_close_matches(str(extra), known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            where = origin(layers, [*path, extra], source)
            parts.append(f"{where}: unknown key {_key([*path, extra])}{hint}")
        return "; ".join(parts)
    source = origin(layers, path, source)
    if error.validator == "required":
        return f"{source}: {_key(error.absolute_path)}: {error.message}"
    if error.validator == "oneOf" and isinstance(error.instance, dict):
        return f"{source}: {_key(error.absolute_path)}: give either 'path' or all of plane1..plane4"
    message = error.message.replace("\n", " ")
    if len(message) > 200:
        message = message[:197] + "..."
    return f"{source}: {_key(error.absolute_path)}: {message}"


def validate(data: dict, schema: dict | str | Path, *, source: str, layers: Sequence[Layer] = ()) -> dict:
    """Validate ``data`` in place against a JSON schema, filling in defaults; a whole-number
    float of an integer key (``chunk_frames: 6.0``) becomes the int.

    Raises :class:`ConfigError` with one line naming the source, the dotted key and the
    problem (an unknown key with the closest valid one). ``data`` may be merged from
    ``layers`` (name, mapping; in merge order, as Snakemake merges config/config.yaml, each
    --configfile, then --config): the line then names the layer that set the key, ``source``
    where none did.
    """
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys, got {type(data).__name__}")
    validator = _Validator(schema)
    errors = list(validator.iter_errors(data))
    while errors and _whole_floats_to_int(data, errors):  # each pass leaves fewer floats
        errors = list(validator.iter_errors(data))
    errors.sort(key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(_one_line(best, source, layers))
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
