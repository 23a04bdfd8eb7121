"""Reading models and data, writing results atomically.

Inputs are only ever opened for reading. Every output is written under a temporary name in the
destination's folder and renamed into place, so a reader (or an interrupted run) sees either the
previous state or the whole result.

``files``: guarded access to an input file (and JSON within a size limit); ``models``: the guarded
ONNX reader and what a model's input expects; ``keys``: the ``onnxmod.*`` metadata keys, named once;
``metadata``: their checks; ``npz``: lazy, size-checked ``.npz`` arrays; ``dataset``: the data
contract; ``atomic``: atomic files and directories. Everything is importable from ``onnxmod.io``
itself.
"""
from __future__ import annotations

from . import keys
from .atomic import (
    atomic_directory,
    check_output_dir,
    check_output_file,
    save_model_atomic,
    signals_deferred,
    write_bytes_atomic,
)
from .dataset import DATA_KEYS, Dataset, load_data
from .files import MAX_JSON_BYTES, _input_path, read_json
from .metadata import KINDS, MAX_CLASS_INDEX, _signature_ok, check_metadata, check_metadata_map, parse_index
from .models import input_spec, load_onnx, token_limit
from .npz import MAX_ARRAY_BYTES, NpzArrays, _read_npz, read_npz

__all__ = [
    "DATA_KEYS", "KINDS", "MAX_ARRAY_BYTES", "MAX_CLASS_INDEX", "MAX_JSON_BYTES", "Dataset", "NpzArrays",
    "_input_path", "_read_npz", "_signature_ok", "atomic_directory", "check_metadata", "check_metadata_map",
    "check_output_dir", "check_output_file", "input_spec", "keys", "load_data", "load_onnx", "parse_index", "read_json",
    "read_npz", "save_model_atomic", "signals_deferred", "token_limit", "write_bytes_atomic",
]
