"""Property test of the general cell front-end against onnxruntime: random cells (1–3 state vectors
of random widths, each new state an activation of products by weights and element-wise terms of
the input, the states and the states already updated in the step, some of them emitted in a random
order),
exported as a batch-major ``Scan``, as a ``Loop`` and unrolled, with random keep sets: removing units
physically computes exactly what holding them at 0 computes, and the model as recognized computes
what the file computes. Mechanics, not learning: the weights are seeded random numbers."""
import numpy as np
from cell_export import export
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from onnxmod import runtime
from onnxmod.errors import UnsupportedModelError
from onnxmod.graph import Model
from onnxmod.units import UnitSelection

I, T, C = 3, 5, 4


def random_cell(seed: int):
    """(step, weights, widths, width of what it emits) of a random cell."""
    rng = np.random.default_rng(seed)
    K = int(rng.integers(1, 4))
    widths = [int(w) for w in rng.integers(2, 6, K)]
    weights = {}

    def w(shape, scale=0.6):
        key = f"p{len(weights)}"
        weights[key] = rng.normal(0, scale, shape)
        return key

    plan = []  # per new state: (terms, bias, activation, gate)
    for k in range(K):
        pool = [("x", None)] + [("s", j) for j in range(K)] + [("new", j) for j in range(k)]
        terms = [(("x", None), "mm", w((I, widths[k])))]
        for _ in range(int(rng.integers(1, 3))):
            src = pool[int(rng.integers(1, len(pool)))]
            width = widths[src[1]]
            if width == widths[k] and rng.random() < 0.4:
                terms.append((src, "mul", w((widths[k],))))
            else:
                terms.append((src, "mm", w((width, widths[k]), 0.5)))
        act = ["Tanh", "Relu", "Sigmoid"][int(rng.integers(0, 3))]
        gate = w((I, widths[k])) if rng.random() < 0.4 else None
        plan.append((terms, w((widths[k],), 0.1), act, gate))
    order = [int(i) for i in rng.permutation(K)][:int(rng.integers(1, K + 1))]  # what it emits, in which order

    def step(o, x, states):
        new = []
        for terms, bias, act, gate in plan:
            acc = None
            for (kind, j), how, key in terms:
                t = x if kind == "x" else (states[j] if kind == "s" else new[j])
                v = o.op("MatMul", t, o.w(key)) if how == "mm" else o.op("Mul", t, o.w(key))
                acc = v if acc is None else o.op("Add", acc, v)
            h = o.op(act, o.op("Add", acc, o.w(bias)))
            if gate is not None:
                h = o.op("Mul", h, o.op("Sigmoid", o.op("MatMul", x, o.w(gate))))
            new.append(h)
        return new, o.op("Concat", *[new[i] for i in order], axis=1)

    return step, weights, widths, sum(widths[i] for i in order)


# Known limitation (unrolled form only): a cell that emits only some of its states, whose other
# states form a delay line through the previous step (s1 <- s2[t-1] <- s0[t-2] <- s1[t-3]), has a
# skewed step whose cut at step 1 still reads the zero initial states; the chain is refused with
# "step 2 computes another cell than step 1" (seed 483487732). Its Loop and Scan forms decompose.


def _run(proto, x):
    return runtime.session(proto).run(None, {"x": x})[0]


@settings(max_examples=45, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), form=st.sampled_from(["scan", "loop", "unrolled"]))
def test_random_cells_slice_exactly(seed, form):
    step, weights, widths, emitted = random_cell(seed)
    rng = np.random.default_rng(seed + 1)
    proto = export(step, weights, widths, I, form, T, head=(rng.normal(0, 1, (C, emitted)), np.zeros(C)))
    try:
        model = Model(proto, source=f"random_{seed}.onnx")
    except UnsupportedModelError as exc:  # the one cell structure refused: one unit emitted twice
        if form == "unrolled" and "computes another cell than step 1" in str(exc):  # known limitation, see below
            assert emitted < sum(widths)
            assume(False)
        assert "emits two values of one unit" in str(exc) and ("node 'body/" in str(exc) or "node 'step1/" in str(exc))
        assume(False)
    (op,) = model.recurrent
    assert op.form == form and op.hidden_size <= sum(widths)  # states tied element-wise share their units
    x = rng.normal(0, 1, (6, T, I)).astype(np.float32)
    np.testing.assert_allclose(_run(model.runnable, x), _run(proto, x), atol=1e-5)
    U = op.hidden_size
    keep = rng.random(U) < 0.6
    keep[int(rng.integers(U))] = True
    general = hasattr(op, "step")  # else a one-state cell its canonical form shows as a vanilla RNN, lifted
    kept_positions = sum(int(keep[op.flow.state_labels(k)].sum()) for k in range(op.step.n_states)) if general else 0
    a = model.fresh()
    a.apply_selection({0: UnitSelection.from_keep(U, [np.flatnonzero(keep)])})
    b = model.fresh()
    b.recurrent[0].mask_states(b.graph, [np.tile(keep.astype(np.float32), (T, 1))], "zeroed", b.source)
    np.testing.assert_allclose(_run(a.export(), x), _run(b.export(), x), atol=1e-5)
    if general:
        assert sum(a.recurrent[0].step.widths) == kept_positions
