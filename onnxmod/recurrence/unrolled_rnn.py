"""Front-end: a vanilla RNN unrolled step by step (torch's default exporter writes ``nn.RNN`` so),
lifted into the native ``RNN`` op.

Recognition: the recurrent weight is one constant (or one copy of it per step: equal copies are one
weight) read by a ``MatMul`` at every step, each step's ``MatMul`` reading the previous step's state
(the first one a provably zero state, or folded away by the exporter). Each step ``s`` is read as
``act(x_s A + h B + c)`` (affine forms, ``affine.py``), the same at every step; ``x_s`` is step ``s``
— or step ``T-1-s``: a backward direction — of one tensor ``P`` (``steps.py``: ``Gather``, a one-step
``Slice``, ``Split``, ``SplitToSequence``), itself an affine form of a time-major input ``X`` (the input
projection, computed once for every step) or that input flipped in time. The chain becomes
``RNN(X)`` with ``W = (A_P A)^T``, ``R = B^T``, and the tensor that stacks the step states (a ``Concat``
along time) reads the op's ``Y``.

The unrolled graph itself only runs at the length it was exported with; the lifted one runs at
any length. The check on traced rows (``verify_forms``) compares both on the model's own data.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import onnx_graphsurgeon as gs

from ..rewrite.base import Namer, is_full_reverse, reverse_axis
from .affine import Act, FormReader, Lin
from .contract import Form, FrontEnd, NoMatch
from .native import NativeRecurrence, _is_zero, lifted_op
from .steps import step_read
from .tensors import constant


def _step_source(t):
    """(P, s) when ``t`` is step ``s`` of tensor ``P`` along axis 0, else None."""
    r = step_read(t)
    return (r.source, r.step) if r is not None and r.axis == 0 else None


def _value_key(w: np.ndarray) -> tuple:
    """A key equal for equal arrays (shape, dtype and every byte): copies of one weight share it."""
    return w.shape, w.dtype.str, hashlib.sha256(np.ascontiguousarray(w).tobytes()).digest()


class UnrolledRNN(FrontEnd):
    name = "unrolled"

    def candidates(self, graph):
        """MatMuls by one square constant, grouped by its value: an exporter may write one copy of the
        recurrent weight per step (torch's dynamo exporter does), and equal copies are one weight."""
        groups = defaultdict(list)
        for n in graph.nodes:
            if n.op == "MatMul" and len(n.inputs) == 2 and isinstance(n.inputs[1], gs.Constant):
                w = np.asarray(n.inputs[1].values)
                if w.ndim == 2 and w.shape[0] == w.shape[1]:
                    groups[_value_key(w)].append(n)
        return [nodes for nodes in groups.values() if len(nodes) >= 2]

    def lift(self, graph, mms, index, ctx):
        H = int(np.asarray(mms[0].inputs[1].values).shape[0])
        name = f"unrolled_{mms[0].name or index}"

        def miss(why):
            return NoMatch(self.name, mms[0].name or name, "MatMul", why)

        chain = self._chain(mms, H)
        if not isinstance(chain, tuple):
            return None if chain is None else miss(chain)
        states, steps = chain
        # each step: act(x_s A + h B + c), the same for every step; x_s step s (or T-1-s: a backward
        # direction) of one tensor P
        forms, P, at = [], None, []
        for s, (m, nxt) in enumerate(steps):
            xs = self._step_input(nxt.inputs[0].inputs[0], m)  # the activation's input
            if xs is None:
                return miss(f"step {s}: its input is not one step of a tensor computed for every step")
            src = _step_source(xs)
            if src is None or (P is not None and src[0] is not P):
                return miss(f"step {s} reads {xs.name!r}, not one step of the input the other steps read")
            P = src[0]
            at.append(src[1])
            width = xs.shape[-1] if xs.shape else None
            v = FormReader(xs, int(width) if isinstance(width, (int, np.integer)) else H,
                           [states[s]] if m is not None else [], H, {}, opset=graph.opset).value(nxt)
            if not isinstance(v, Act) or v.lin.B.shape != (H, H):
                return miss(f"step {s} is not a vanilla RNN step act(x W + h R + b)")
            forms.append(v)
        n = len(steps)
        flip = P.inputs[0] if P.inputs else None
        if flip is not None and is_full_reverse(flip) == 0:  # the steps read a tensor flipped in time
            P, at = flip.inputs[0], [n - 1 - a for a in at]
        reverse = at == list(range(n))[::-1] and n > 1
        if at != list(range(n)) and not reverse:
            return miss(f"its steps read steps {at[:4]}... of {P.name!r}, not every step in order or in reverse order")
        if reverse and P.shape is not None and P.shape[0] != n:
            return miss(f"its steps read {P.name!r} backwards from step {n - 1}, not from its last step")
        f0 = forms[-1]  # a step that reads its state (the first one may not: from a zero state, folded)
        for s, f in enumerate(forms):
            B = f.lin.B if steps[s][0] is not None else f0.lin.B  # a folded first step's h B is 0: any B
            if f.spec != f0.spec or not all(np.array_equal(a, b) for a, b in
                                            ((f.lin.A, f0.lin.A), (B, f0.lin.B), (f.lin.c, f0.lin.c))):
                return miss(f"step {s} computes a different cell than step {len(forms) - 1}")
        # P as an affine form of a time-major input X
        X, proj = self._projection(P, graph.opset)
        if X is None:
            return miss(f"the steps' input {P.name!r} is not an affine map of one [T, N, I] tensor")
        A = proj.A @ f0.lin.A
        W = A.T[None]
        Wb = proj.c @ f0.lin.A + f0.lin.c
        R = f0.lin.B.T[None]
        B = np.concatenate([Wb, np.zeros(H)])[None]
        return self._replace(graph, name, X, W, R, B, f0, H, states[1:], index, reverse)

    def _chain(self, mms, H):
        """(states, steps) of the chain the MatMuls by one recurrent weight make: ``steps[s]`` is (the
        MatMul reading state s, state s + 1), the first one (None, state 1) when the exporter folded
        the product of the zero initial state away; None when ``mms`` is no chain from a zero state,
        or why not (a sentence)."""
        by_state = {id(m.inputs[0]): m for m in mms}
        # the first step reads a state no step computed; follow the chain from there
        first = [m for m in mms if not self._computed_by_chain(m.inputs[0], mms)]
        if len(first) != 1 or len(mms) < 2:
            return None  # not one chain: a weight shared some other way
        h0 = first[0].inputs[0]
        if _is_zero(h0):
            states, steps = [h0], []
        elif self._folded_first_step(h0):  # step 0 from a zero state with h0 R folded away
            states, steps = [None, h0], [(None, h0)]
        else:
            return None  # a weight shared by a few layers (tied weights), not a recurrence from a zero state
        if len(steps) + len(mms) < 3:
            return None
        m = first[0]
        while m is not None:
            nxt = self._next_state(m, H)
            if nxt is None:
                return (f"step {len(steps)} of the chain reading weight {m.inputs[1].name!r} does not end in an "
                        f"activation of width {H}")
            steps.append((m, nxt))
            states.append(nxt)
            m = by_state.get(id(nxt))
        if len([m for m, _ in steps if m is not None]) != len(mms):
            return f"the weight {mms[0].inputs[1].name!r} is read {len(mms)} times but the chain has {len(steps)} steps"
        return states, steps

    @staticmethod
    def _folded_first_step(t) -> bool:
        """Whether ``t`` is an activation of a sum with no variable but one step of the input (step 0
        of a chain whose zero initial state's product an exporter folded into a constant)."""
        p = t.inputs[0] if t.inputs else None
        if p is None or p.op not in ("Tanh", "Relu", "Sigmoid"):
            return False
        x = UnrolledRNN._step_input(p.inputs[0], None)
        return x is not None and _step_source(x) is not None and _step_source(x)[1] == 0

    @staticmethod
    def _computed_by_chain(t, mms, depth=0):
        """Whether ``t`` descends from one of ``mms`` (a state some step computed)."""
        seen, todo = set(), [t]
        outs = {id(m.outputs[0]) for m in mms}
        while todo:
            u = todo.pop()
            if id(u) in outs:
                return True
            if id(u) in seen or not u.inputs or len(seen) > 200:
                continue
            seen.add(id(u))
            todo.extend(x for x in u.inputs[0].inputs if isinstance(x, gs.Variable))
        return False

    @staticmethod
    def _next_state(m, H):
        """The first activation after ``m`` along single-consumer Adds: the step's new state."""
        t = m.outputs[0]
        for _ in range(6):
            consumers = [c for c in t.outputs]
            acts = [c for c in consumers if c.op in ("Tanh", "Relu", "Sigmoid")]
            if acts:
                return acts[0].outputs[0]
            adds = [c for c in consumers if c.op == "Add"]
            if len(adds) != 1:
                return None
            t = adds[0].outputs[0]
        return None

    @staticmethod
    def _step_input(act_in, m):
        """The leaf of the step's sum of terms that is neither the state's product (``m``'s) nor a constant."""
        todo, found = [act_in], []
        while todo:
            t = todo.pop()
            if (m is not None and t is m.outputs[0]) or isinstance(t, gs.Constant) or constant(t) is not None:
                continue
            p = t.inputs[0] if t.inputs else None
            if p is not None and p.op == "Add":
                todo.extend(p.inputs)
            else:
                found.append(t)
        return found[0] if len(found) == 1 else None

    @staticmethod
    def _projection(P, opset):
        """(X, form of P in X) for ``P = affine(X)`` with X ``[T, N, I]`` (I known), else (None, None)."""
        t = P
        leaves = []
        todo = [P]
        while todo:
            u = todo.pop()
            if isinstance(u, gs.Constant) or constant(u) is not None:
                continue
            p = u.inputs[0] if u.inputs else None
            if p is not None and p.op in ("Add", "Sub", "MatMul", "Mul", "Identity"):
                todo.extend(x for x in p.inputs if x.name)
            else:
                leaves.append(u)
        if len({id(x) for x in leaves}) != 1:
            return None, None
        X = leaves[0]
        if X.shape is None or len(X.shape) != 3 or not isinstance(X.shape[2], (int, np.integer)):
            return None, None
        I = int(X.shape[2])
        v = FormReader(X, I, [], 1, {}, opset=opset).value(t)
        if not isinstance(v, Lin) or v.A.shape[0] != I:
            return None, None
        return X, v

    def _replace(self, graph, name, X, W, R, B, act, H, states, index, reverse=False):
        """The chain replaced by an RNN (``reverse``: a reverse one). A ``Concat`` along time of every
        step's state reads the op's ``Y``: in time order, or reversed in time (a forward chain over a
        flipped input whose outputs the model stacks flipped back)."""
        p = f"{name}/lifted"
        n = len(states)
        state_ids = {id(s): i for i, s in enumerate(states)}

        def stacked(node):  # None, or whether the Concat holds the steps reversed in time
            if node.op != "Concat" or int(node.attrs.get("axis", 0)) != 0:
                return None
            at = [state_ids.get(id(x)) for x in node.inputs]
            if None in at or len(at) != n:
                return None
            t = [n - 1 - i for i in at] if reverse else at  # the time of each stacked state
            return False if t == list(range(n)) else (True if t == list(range(n))[::-1] else None)

        stack = [c for c in graph.nodes if stacked(c) is not None]
        for i, s in enumerate(states[:-1]):
            other = [c for c in s.outputs if c.op != "MatMul" and not any(c is k for k in stack) and not (
                c.op == "Add" or c.op in ("Tanh", "Relu", "Sigmoid"))]
            if other:
                return NoMatch(self.name, name, "MatMul",
                               f"the state of step {i} is read by {other[0].op} {other[0].name!r}, not only by the "
                               f"next step and the stacked output")
        attrs = {"activations": [act.name], **({"direction": "reverse"} if reverse else {})}
        native, Y, Yh, _ = lifted_op(graph, name, "RNN", X, W, R, B, attrs, H)
        watch = []
        for node in stack:  # Y without D (reversed in time back, if the model stacked it so)
            flipped = stacked(node)
            out = node.outputs[0]
            node.outputs.clear()
            node.inputs.clear()
            steps = gs.Variable(f"{p}/steps_in_time", dtype=np.float32) if flipped else out
            graph.nodes.append(gs.Node("Squeeze", f"{p}/steps", inputs=[
                Y, gs.Constant(f"{p}/axis1", np.array([1], dtype=np.int64))], outputs=[steps]))
            if flipped:
                reverse_axis(graph, Namer(graph, p), steps, 0, out=out)
            watch.append(out.name)
        last = states[-1]
        for c in list(last.outputs):  # the final state read directly: Y_h ([1, N, H], as the step's)
            if c.op != "MatMul":
                c.inputs = [Yh if x is last else x for x in c.inputs]
        graph.cleanup().toposort()
        left = [s for s in states if s.outputs]
        if left:
            return NoMatch(self.name, name, "MatMul", f"an intermediate step state ({left[0].name!r}) is read other "
                                                      f"than by the stacked output")
        return NativeRecurrence(index, native, Form.UNROLLED, watch)
