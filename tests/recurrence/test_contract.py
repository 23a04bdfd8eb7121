"""The recurrence contract (``onnxmod/recurrence/contract.py``) is enforced, not documented.

Every front-end in ``FRONTENDS`` is run on a committed fixture of the form it reads; each
recurrence it hands over must be a concrete ``Recurrence`` whose methods keep the contract's
signatures and answer as the contract says (shapes, labels, the nodes it reads by, slicing that
shrinks it). A front-end added without a fixture here fails ``test_every_front_end_has_a_fixture``.
"""
import inspect
from pathlib import Path

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from onnxmod.errors import UnsupportedModelError
from onnxmod.graph import Model
from onnxmod.io import load_onnx
from onnxmod.prepare import prepare_graph
from onnxmod.recurrence import FRONTENDS, Form, FrontEnd, Recognition, Recurrence
from onnxmod.rewrite import normalize
from onnxmod.units import UnitSelection

ROOT = Path(__file__).resolve().parents[2]
FX = ROOT / "fixtures"

# front-end name -> (fixture, the form its recurrences have)
FIXTURE_OF = {
    "loop": ("exporters/tf2onnx_keras3/brown_genre_gru.onnx", Form.LOOP),
    "unrolled": ("exporters/torch_dynamo/brown_genre_rnn_tanh1.onnx", Form.UNROLLED),
    "unrolled-cell": ("cells/digits/grucell1_unrolled.onnx", Form.UNROLLED),
    "native": ("math_topics/lstm1_bi.onnx", Form.NATIVE),
    "scan": ("cells/digits/durnn1_loop.onnx", Form.LOOP),  # the Scan the loop front-end built, read again
}


def _found_by(frontend: FrontEnd) -> tuple[gs.Graph, list]:
    """The recurrences ``frontend`` hands over for its fixture (what it yields, misses included)."""
    path, _ = FIXTURE_OF[frontend.name]
    if frontend.name == "scan":  # a normalized graph recognized again: the general cell is a Scan onnxmod built
        model = Model.load(FX / path)
        graph = model._pristine.copy()
        ctx = Recognition(str(path), dict(model.lifted))
    else:
        graph, _ = prepare_graph(load_onnx(FX / path), str(path))
        normalize(graph)
        ctx = Recognition(str(path))
    return graph, list(frontend.find(graph, ctx))


def test_every_front_end_has_a_fixture():
    assert [fe.name for fe in FRONTENDS] == list(FIXTURE_OF)
    assert isinstance(FRONTENDS, tuple)


def test_the_contract_is_abstract():
    with pytest.raises(TypeError):
        Recurrence(0, "x", Form.NATIVE)  # every method a front-end must provide is abstract
    abstract = Recurrence.__abstractmethods__
    for name in ("hidden_size", "x", "y", "unit_outputs", "slice_units", "mask_states", "reference", "describe"):
        assert name in abstract


def _contract_members():
    for name, member in vars(Recurrence).items():
        if name.startswith("_"):
            continue
        if inspect.isfunction(member):
            yield name, inspect.signature(member)


@pytest.mark.parametrize("frontend", FRONTENDS, ids=lambda fe: fe.name)
def test_every_front_end_answers_to_the_contract(frontend):
    graph, found = _found_by(frontend)
    recs = [r for r in found if isinstance(r, Recurrence)]
    assert recs and len(recs) == len(found), f"{frontend.name}: {[str(m) for m in found if m not in recs]}"
    _, form = FIXTURE_OF[frontend.name]
    for r in recs:
        cls = type(r)
        assert not inspect.isabstract(cls), f"{cls.__name__} leaves {sorted(cls.__abstractmethods__)} abstract"
        for name, sig in _contract_members():  # the same parameters as the contract declares
            got = inspect.signature(getattr(cls, name))
            assert list(got.parameters) == list(sig.parameters), f"{cls.__name__}.{name}{got} is not {name}{sig}"
        assert r.form is form and isinstance(r.watch, list)
        assert r.state_from_node is None or r.state_from_node in graph.nodes
        # identity and shapes
        assert r.units == r.hidden_size * r.directions > 0
        assert len(r.reversed_directions()) == r.directions
        rule = r.rule
        assert rule in ("relu", "logistic") if isinstance(rule, str) else set(rule) <= {"relu", "logistic"}
        desc = r.describe()
        assert desc["name"] == r.name and desc["form"] == str(form) and desc["hidden_size"] == r.hidden_size
        # the nodes it reads by, and the tensors its units leave by
        readers = r.reader_nodes()
        assert readers and all(n in graph.nodes for n in readers)
        assert r.reads(readers[0], r.x) == "x" and r.reads(gs.Node("Identity"), r.x) is None
        outs = r.unit_outputs()
        assert any(t is r.y for t, _ in outs)
        for _, labels in outs:
            assert labels.min() >= 0 and labels.max() < r.units
        # numbers: a native cell's reference runs; a general cell says it has none
        rng = np.random.default_rng(0)
        if r.cell is not None:
            W, R, B = r.weights()
            assert W.shape[:2] == R.shape[:2] == (r.directions, r.cell.num_gates * r.hidden_size)
            out = r.reference(rng.normal(size=(3, 2, W.shape[2])))
            assert out["Y"].shape == (3, r.directions, 2, r.hidden_size)
        else:
            with pytest.raises(UnsupportedModelError):
                r.reference(rng.normal(size=(3, 2, r.step.input_size)))
            with pytest.raises(UnsupportedModelError):
                r.weights()
        # slicing shrinks it to the kept units
        keep = [np.arange(0, r.hidden_size, 2)] * r.directions
        r.slice_units(UnitSelection.from_keep(r.hidden_size if r.cell is not None else r.units, keep))
        assert r.hidden_size == len(keep[0])
