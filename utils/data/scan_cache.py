"""The scan cache's file format: JSON that can only describe data, never code to run.

The cache folder may be shared or writable by others (`$YOLO_SCAN_CACHE`), so it is read as untrusted input:
JSON parsed by `json`, then rebuilt from a closed set of types. Records and Samples are written field by
field (dataclasses.fields), so a plain field added to either is carried without a change here. Values:
None, bool, int, float, str and lists are JSON's own; the others are one-key objects:
  {"T": [...]} tuple; {"D": [[key, value], ...]} dict; {"C": [[key, count], ...]} Counter; {"P": "..."} Path;
  {"A": [dtype, shape, [values...]]} numpy array of numbers, bools or text; {"N": [dtype, value]} numpy scalar;
  {"R": [class name, {field: value}]} a dataclass of RECORD_TYPES, with exactly that class's fields.
Anything else (another tag, an unknown class, fields that differ from the class's: a file written before a
field was added or removed) raises StaleCache, and the caller scans again.
"""
import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Dict

import numpy as np

from utils.data.annotations import Record, Sample

RECORD_TYPES = {"Record": Record, "Sample": Sample}
ARRAY_KINDS = "biufU"  # numpy dtype kinds an array may have: numbers, bools, text (never objects)


class StaleCache(ValueError):
    """A cache file that this version cannot use: written by another version, damaged, or not a cache."""


def encode(value):
    """`value` as JSON-ready data (see the module docstring); TypeError for a type it cannot hold."""
    if isinstance(value, np.generic) and value.dtype.kind in ARRAY_KINDS:  # before float: np.float64 is one
        return {"N": [value.dtype.str, value.item()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, tuple):
        return {"T": [encode(v) for v in value]}
    if isinstance(value, Counter):
        return {"C": [[encode(k), encode(n)] for k, n in value.items()]}
    if isinstance(value, dict):
        return {"D": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, Path):
        return {"P": str(value)}
    if isinstance(value, np.ndarray) and value.dtype.kind in ARRAY_KINDS:
        return {"A": [value.dtype.str, list(value.shape), value.ravel().tolist()]}
    name = type(value).__name__
    if dataclasses.is_dataclass(value) and RECORD_TYPES.get(name) is type(value):
        return {"R": [name, {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}]}
    raise TypeError(f"the scan cache cannot hold a {type(value).__name__}")


def decode(data):
    """The value `encode` turned into `data`; StaleCache for anything it would not have written."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict) or len(data) != 1:
        raise StaleCache(f"unexpected {type(data).__name__} {str(data)[:60]}")
    (tag, body), = data.items()
    if tag == "T":
        return tuple(decode(v) for v in _list(body, tag))
    if tag in ("C", "D"):
        pairs = [tuple(decode(p) for p in _list(pair, tag, 2)) for pair in _list(body, tag)]
        return Counter(dict(pairs)) if tag == "C" else dict(pairs)
    if tag == "P" and isinstance(body, str):
        return Path(body)
    if tag == "A":
        dtype, shape, values = _list(body, tag, 3)
        return np.array(values, dtype=_dtype(dtype)).reshape(shape)
    if tag == "N":
        dtype, value = _list(body, tag, 2)
        return _dtype(dtype).type(value)
    if tag == "R":
        return _dataclass(*_list(body, tag, 2))
    raise StaleCache(f"unknown tag {tag!r}")


def _list(body, tag: str, length: int = -1) -> list:
    if not isinstance(body, list) or (length >= 0 and len(body) != length):
        raise StaleCache(f"{tag}: expected a list{f' of {length}' if length >= 0 else ''}, found {str(body)[:60]}")
    return body


def _dtype(text) -> np.dtype:
    try:
        dtype = np.dtype(str(text))
    except TypeError:
        raise StaleCache(f"unknown dtype {str(text)[:20]!r}") from None
    if dtype.kind not in ARRAY_KINDS:
        raise StaleCache(f"dtype {dtype} is not one of numbers, bools or text")
    return dtype


def _dataclass(name, fields):
    cls = RECORD_TYPES.get(name) if isinstance(name, str) else None
    if cls is None or not isinstance(fields, dict):
        raise StaleCache(f"unknown record type {str(name)[:40]!r}")
    wanted = {f.name for f in dataclasses.fields(cls) if f.init}
    if set(fields) != wanted:
        raise StaleCache(f"{name} fields {sorted(fields)} differ from this version's {sorted(wanted)}")
    return cls(**{k: decode(v) for k, v in fields.items()})


def dumps(version: int, entries: Dict[str, tuple]) -> str:
    """The cache file's text: {"version", "entries": {key: [fingerprint, record]}}."""
    return json.dumps({"version": version, "entries": {k: encode(list(v)) for k, v in entries.items()}})


def loads(text: str, version: int) -> Dict[str, tuple]:
    """{key: (fingerprint, Record)} of a cache file's text; StaleCache for another version's file or a bad one."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise StaleCache(f"not JSON ({str(e)[:80]})") from None
    if not isinstance(data, dict) or data.get("version") != version or not isinstance(data.get("entries"), dict):
        raise StaleCache(f"not a version {version} scan cache")
    try:
        entries = {k: tuple(_list(decode(v), "entry", 2)) for k, v in data["entries"].items()}
    except (TypeError, ValueError, RecursionError) as e:  # ValueError covers StaleCache and numpy's reshape
        raise StaleCache(str(e)[:200]) from None
    records = [r for _, r in entries.values()]
    if not all(isinstance(r, Record) and (r.sample is None or isinstance(r.sample, Sample)) for r in records):
        raise StaleCache("an entry is not a Record")
    return entries
