"""Unit effects (the size search's removal order), checked against onnxruntime and the head's algebra."""
import numpy as np
from conftest import fixture_path

from onnxmod import api, runtime
from onnxmod.ablation import class_margins, concern_by_effect, unit_effects
from onnxmod.concern import ConcernConfig
from onnxmod.graph import Model
from onnxmod.modularize import build_module
from onnxmod.trace import run_trace


def test_class_margins_are_the_modules_log_odds(math_lstm1):
    """One pass with every class channeled gives each class's module log-odds."""
    model_path, data = math_lstm1
    model = Model.load(model_path)
    x = np.load(data)["x_test"][:32]
    scores, _ = api.identify_concerns(model, api.load_dataset_for(model, data), "rolled", ConcernConfig(), False)
    margins = class_margins(model, {}, [0, 3, 5], x)
    assert margins.shape == (32, 3)
    for col, c in enumerate([0, 3, 5]):
        proto = build_module(model, scores[c].concern(ConcernConfig(), 0.0))
        lg = runtime.session(proto).run(["logits"], {"tokens": x})[0]
        np.testing.assert_allclose(margins[:, col], lg[:, 1] - lg[:, 0], atol=1e-5)


def test_effects_of_a_one_step_layer_are_its_head_weights_times_its_states(math_lstm1):
    """math_topics reads one step into one layer, so removing unit u moves class c's log-odds by
    exactly a[c, u] * h[u] (a = the class's head row minus the mean of the others'): the measured
    effects must be the mean of its square."""
    model_path, data = math_lstm1
    model = Model.load(model_path)
    x = np.load(data)["x_test"][:40]
    classes = [1, 4, 6]
    effects = unit_effects(model, x, classes)
    h = run_trace(model, x, progress=False).hidden[0][:, -1, 0, :]  # [N, H]
    W = np.asarray(model.head.node.inputs[1].values)  # Gemm transB: [C, H]
    W = W if W.shape[0] == model.num_classes else W.T
    a = np.stack([W[c] - np.delete(W, c, axis=0).mean(axis=0) for c in classes])  # [3, H]
    expect = ((a[:, None, :] * h[None]) ** 2).mean(axis=1)
    assert list(effects) == [0] and effects[0].shape == (3, 64)
    np.testing.assert_allclose(effects[0], expect, rtol=2e-3, atol=1e-7)


def test_concern_by_effect_removes_the_least_effective_units():
    class Scores:
        class_index, class_name, positives, negatives = 2, "two", 5, 7

    effects = {0: np.array([[0.0, 0.0, 0.0, 0.0], [3.0, 1.0, 2.0, 1.0]]), 1: np.array([[1.0, 1.0], [0.5, 0.1]])}
    c = concern_by_effect(Scores, effects, 1, 0.5)
    assert c.mode == "rolled" and c.class_index == 2 and (c.positives, c.negatives) == (5, 7)
    np.testing.assert_array_equal(c.keep[0], [True, False, True, False])  # ties: the lower id goes first
    np.testing.assert_array_equal(c.keep[1], [True, False])
    assert concern_by_effect(Scores, effects, 0, 0.0).keep[0].all()


def test_effects_cover_every_direction_of_a_bidirectional_layer():
    model = Model.load(fixture_path("math_topics", "lstm1_bi.onnx"))
    x = np.load(fixture_path("math_topics", "data.npz"))["x_test"][:16]
    effects = unit_effects(model, x, [0])
    assert effects[0].shape == (1, model.recurrent[0].units) and (effects[0] > 0).mean() > 0.9
