"""onnxmod.io: strict metadata integers, lazy bounded .npz reads, IR 3 models (issue 12)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import build, random_stack

from onnxmod import io
from onnxmod.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import fuzz  # noqa: E402


@pytest.mark.parametrize("text, want", [("0", 0), ("7", 7), ("65535", 65535), ("1_000", None), (" 3 ", None),
                                        ("-7", None), ("+1", None), ("01", None), ("1" * 30, None), ("\u0663", None),
                                        ("", None), ("1.0", None), (3, None)])
def test_parse_index_takes_plain_decimals_only(text, want):
    assert io.parse_index(text) == want


def test_npz_keys_are_read_only_when_asked(tmp_path):
    fuzz.write_npz_bomb(tmp_path / "d.npz", {"a": np.arange(3)}, "big", 10, declared=10 ** 12)
    arrays = io.NpzArrays(tmp_path / "d.npz")
    assert set(arrays.keys()) == {"a", "big"} and "big" in arrays
    np.testing.assert_array_equal(arrays["a"], np.arange(3))
    with pytest.raises(InputError, match="'big' declares shape"):
        arrays["big"]


def test_npz_cap_from_the_environment(tmp_path, monkeypatch):
    np.savez(tmp_path / "d.npz", a=np.zeros(1000))
    monkeypatch.setattr(io.npz, "MAX_ARRAY_BYTES", 4000)  # where NpzArrays reads its limit
    with pytest.raises(InputError, match="'a' holds 8,128 bytes uncompressed, above onnxmod's limit of 4,000"):
        io.NpzArrays(tmp_path / "d.npz")["a"]


def test_ir3_weights_become_constants(tmp_path):
    proto = fuzz.ir3(build(random_stack(np.random.default_rng(0), "GRU", 1, 3, 1)))
    onnx.save(proto, str(tmp_path / "m.onnx"))
    loaded = io.load_onnx(tmp_path / "m.onnx")
    assert [i.name for i in loaded.graph.input] == ["x"] and loaded.ir_version == 4
