"""onnxmod.parallel.pmap: serial by default, Ray tasks when asked (tests skip without Ray)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxmod import fingerprint as fp
from onnxmod.errors import InputError, UsageError
from onnxmod.io import load_onnx
from onnxmod.parallel import pmap, ray_available

ZOO = Path(__file__).resolve().parents[1] / "fixtures" / "zoo"


def square(x):
    return x * x


def fail_on_three(x):
    if x == 3:
        raise InputError(f"item {x} is bad")
    return x


def test_serial_map_keeps_order_and_raises_the_items_error():
    assert pmap(square, range(7), progress=False) == [x * x for x in range(7)]
    assert pmap(square, [], progress=False) == []
    with pytest.raises(InputError, match="item 3 is bad"):
        pmap(fail_on_three, range(6), progress=False)


@pytest.mark.skipif(ray_available(), reason="Ray is installed")
def test_asking_for_ray_without_it_is_a_usage_error():
    with pytest.raises(UsageError, match="onnxmod\\[ray\\]"):
        pmap(square, [1], ray=True, progress=False)


needs_ray = pytest.mark.skipif(not ray_available(), reason="Ray is not installed (pip install 'onnxmod[ray]')")


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module's tests (pmap uses a running Ray instead of starting its own)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@needs_ray
def test_ray_gives_the_serial_results_in_order(ray_session):
    # Ray workers import functions by module: use library ones (tests/ is not on their path)
    items = [{"i": i, "x": list(range(i))} for i in range(20)]
    assert pmap(json.dumps, items, ray=True, progress=False) == [json.dumps(x) for x in items]
    first = sorted((ZOO / "tomita" / "members").glob("*.onnx"))[0]
    with pytest.raises(InputError, match="missing.onnx: no such file"):
        pmap(load_onnx, [first, ZOO / "missing.onnx"], ray=True, progress=False)
    files = sorted((ZOO / "tomita" / "members").glob("*.onnx"))[:6]
    data = sorted((ZOO / "tomita" / "data").glob("*.npz"))
    for kind in ("functional", "interactive", "mechanistic"):
        a = fp.to_npz(fp.fingerprint_rows(files, kind, probes=16, probe_data=data))
        b = fp.to_npz(fp.fingerprint_rows(files, kind, probes=16, probe_data=data, ray=True))
        assert a == b, kind


@needs_ray
def test_ray_zoo_index_is_byte_identical(tmp_path, ray_session):
    import shutil

    from onnxmod import api

    z = tmp_path / "zoo"
    (z / "members").mkdir(parents=True)
    shutil.copytree(ZOO / "digits" / "data", z / "data")
    for p in sorted((ZOO / "digits" / "members").glob("*.onnx"))[:4]:
        shutil.copy(p, z / "members" / p.name)
    api.zoo_index(z, tmp_path / "serial", probes=16)
    api.zoo_index(z, tmp_path / "ray", probes=16, ray=True)
    for f in ("index.json", "fingerprints.npz"):
        assert (tmp_path / "serial" / f).read_bytes() == (tmp_path / "ray" / f).read_bytes()
