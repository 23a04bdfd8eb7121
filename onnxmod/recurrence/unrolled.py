"""Front-end: a vanilla RNN unrolled step by step (torch's default exporter writes ``nn.RNN`` so),
lifted into the native ``RNN`` op.

Recognition: the recurrent weight is one constant read by a ``MatMul`` at every step, each step's
``MatMul`` reading the previous step's state (the first one a provably zero state). Each step
``s`` is read as ``act(x_s A + h B + c)`` (the affine forms of the Loop front-end), the same at every
step; ``x_s`` is step ``s`` of one tensor ``P`` (``SequenceAt`` of ``SplitToSequence``, ``Gather`` or
a one-step ``Slice``), itself an affine form of a time-major input ``X`` (the input projection,
computed once for every step). The chain becomes ``RNN(X)`` with ``W = (A_P A)^T``, ``R = B^T``, and
the tensor that stacks the step states (a ``Concat`` along time) reads the op's ``Y``.

The unrolled graph itself only runs at the length it was exported with; the lifted one runs at
any length. The check on traced rows (``verify_forms``) compares both on the model's own data.
"""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict

import numpy as np
import onnx_graphsurgeon as gs

from .cellflow import CellFlow
from .contract import Form, FrontEnd, NoMatch
from .general import CellOutputs, build
from .general import miss as general_miss
from .affine import Act, FormReader, Lin
from .identify import NativeCell, NoCell, lstm_of_step, one_state
from .native import NativeRecurrence, _is_zero, lifted_op, time_major
from .step import Constants, StepError, extract
from .steps import step_read, step_reads
from ..rewrite.base import Namer, is_full_reverse, reverse_axis
from .tensors import constant, depends


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
                return NoMatch(self.name, name, "MatMul", f"the state of step {i} is read by {other[0].op} "
                                                          f"{other[0].name!r}, not only by the next step and the stacked output")
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


class UnrolledCells(FrontEnd):
    """A cell unrolled step by step on the raw input (torch's default exporter for a cell written in
    plain ops): step ``s`` reads ``Gather(X, s)`` and the previous step's values, and a ``Concat``
    stacks every step's output. A one-state cell the Loop front-end knows (vanilla RNN, GRU), read
    at every step as a body and the same at every step, becomes the native op; any other cell a
    general cell (``_general``), re-rolled into a ``Scan``."""

    name = "unrolled-cell"

    def candidates(self, graph):
        return step_reads(graph)

    @staticmethod
    def _stack(reads):
        """The Concat stacking every step's state (through Unsqueeze), and the states in order."""
        n_steps = len(reads)
        for r in reads[:1]:
            seen, todo = set(), [r.x]
            while todo:  # downstream of step 0's input, the first Concat of T unsqueezed tensors
                t = todo.pop(0)
                if id(t) in seen or len(seen) > 5000:
                    continue
                seen.add(id(t))
                for c in t.outputs:
                    if c.op == "Concat" and len(c.inputs) == n_steps and all(
                            x.inputs and x.inputs[0].op == "Unsqueeze" for x in c.inputs):
                        return c, [x.inputs[0].inputs[0] for x in c.inputs]
                    todo.extend(c.outputs)
        return None, None

    def lift(self, graph, reads, index, ctx):
        stack, states = self._stack(reads)
        if stack is None:  # no step's output stacked: a cell whose model reads its final states only
            return self._general_final(graph, reads, index)
        if not all(depends(states[s + 1], reads[s].x) for s in range(len(states) - 1)):
            return None  # reads a tensor step by step, but no step reads the previous one's result: no recurrence
        if not all(depends(states[s + 1], states[s]) for s in range(len(states) - 1)):
            return self._general(graph, reads, stack, states, index)  # its state is not what it emits
        name = f"unrolled_{reads[0].name or index}"

        def miss(why):
            return NoMatch(self.name, stack.name or name, "Concat", why)

        axis, X = reads[0].axis, reads[0].source
        if X.shape is None or len(X.shape) != 3 or not isinstance(X.shape[2], (int, np.integer)):
            return miss("the unrolled steps read a tensor that is not [N, T, I] or [T, N, I] with a known I")
        I = int(X.shape[2])
        H = states[0].shape[-1] if states[0].shape else None
        # the initial state: the one leaf of step 0 that is provably zero
        h0 = self._zero_leaf(states[0], reads[0].x) if isinstance(H, (int, np.integer)) else None
        if h0 is None:  # not the one-state cells a native op computes: the general cell front-end decides
            return self._general(graph, reads, stack, states, index)
        found = None
        prev = h0
        for s, (r, h) in enumerate(zip(reads, states)):
            reader = FormReader(r.x, I, [prev], int(H), {}, opset=graph.opset)
            try:
                cell = one_state(reader, reader.value(h), int(H))
            except (ValueError, IndexError) as exc:  # shapes the forms cannot follow
                cell = NoCell(f"its step cannot be read as affine forms ({exc})")
            if isinstance(cell, NoCell):  # none of the cells a native op computes
                return self._general(graph, reads, stack, states, index)
            if found is None:
                found = cell
            elif not cell.same_as(found):
                return miss(f"step {s} computes another cell than step 0")
            prev = h
        for s, h in enumerate(states[:-1]):  # a state read by anything but the next step and the stack
            if any(c.outputs[0] in graph.outputs for c in h.outputs if c.op == "Unsqueeze"):
                return miss(f"the state of step {s} is a graph output")
        return self._replace(graph, name, X, axis, found, int(H), stack, states, index)

    @staticmethod
    def _zero_leaf(h1, x0):
        seen, todo, zeros = set(), [h1], []
        while todo:
            t = todo.pop()
            if id(t) in seen or t is x0 or isinstance(t, gs.Constant) or constant(t) is not None:
                continue
            seen.add(id(t))
            if _is_zero(t):
                zeros.append(t)
                continue
            if t.inputs:
                todo.extend(x for x in t.inputs[0].inputs if x.name)
        return zeros[0] if len({id(z) for z in zeros}) == 1 else None

    def _replace(self, graph, name, X, axis, cell: NativeCell, H, stack, states, index):
        p = f"{name}/lifted"
        x = time_major(graph, p, X) if axis == 1 else X
        native, Y, Yh, _ = lifted_op(graph, name, cell.op_type, x, cell.W, cell.R, cell.B, cell.attrs, H)
        steps = gs.Variable(f"{p}/steps", dtype=np.float32)  # [T, N, H]
        graph.nodes.append(gs.Node("Squeeze", f"{p}/steps", inputs=[
            Y, gs.Constant(f"{p}/axis1", np.array([1], dtype=np.int64))], outputs=[steps]))
        out = stack.outputs[0]
        stack_axis = int(stack.attrs.get("axis", 0)) % 3
        stack.outputs.clear()
        stack.inputs.clear()
        graph.nodes.append(gs.Node("Transpose", f"{p}/stacked", attrs={"perm": [0, 1, 2] if stack_axis == 0
                                                                         else [1, 0, 2]},
                                   inputs=[steps], outputs=[out]))
        last = states[-1]
        for c in list(last.outputs):  # the final state read directly: Y_h
            if c.op != "Unsqueeze":
                sq = gs.Variable(f"{p}/final", dtype=np.float32)
                graph.nodes.append(gs.Node("Squeeze", f"{p}/final", inputs=[
                    Yh, gs.Constant(f"{p}/axis0", np.array([0], dtype=np.int64))], outputs=[sq]))
                c.inputs = [sq if t is last else t for t in c.inputs]
        graph.cleanup().toposort()
        return NativeRecurrence(index, native, Form.UNROLLED, [out.name])

    # ---- a general cell ---------------------------------------------------------------------
    def _general(self, graph, reads, stack, outs, index):
        """The chain as a general cell (``general.py``): the steps told apart (``_cut``), step 1 cut
        out as the cell's step, its states being what it reads from step 0, their new values what
        step 2 reads in the same places. Every later step must compute the same (checked node by
        node), step 0 must start from zero states (the check on traced rows compares the rest), and
        nothing outside the chain may read inside it."""
        name = f"unrolled_{reads[0].name or index}"
        T = len(reads)

        def miss(why):
            return general_miss(self.name, stack.name or name, "Concat", why)

        if T < 3:
            return miss("an unrolled chain needs 3 steps or more to tell its states apart")
        axis, X = reads[0].axis, reads[0].source
        if X.shape is None or len(X.shape) != 3 or not isinstance(X.shape[2], (int, np.integer)):
            return miss("the unrolled steps read a tensor that is not [N, T, I] or [T, N, I] with a known I")
        stack_axis = int(stack.attrs.get("axis", 0)) % 3
        if stack_axis not in (0, 1) or any(constant(u.inputs[0].inputs[1]) is None or np.atleast_1d(
                constant(u.inputs[0].inputs[1])).tolist() != [stack_axis] for u in stack.inputs):
            return miss(f"its steps are stacked by {stack.name!r} along an axis that is not time")
        xs = [r.x for r in reads]
        graph.toposort()
        dep = _steps_of(graph, xs)
        first = None
        for cut in ("outputs", "inputs"):
            got = self._cut(graph, reads, stack, outs, xs, dep, cut)
            if not isinstance(got, str):
                break
            first = first or got
        else:
            return miss(first)
        states_in, states_out, by_step = got
        widths = self._widths(states_in) or self._from_zero(by_step[0], _read_nodes(reads), dep)
        if isinstance(widths, str):
            return miss(widths)
        widths = [int(a.shape[-1]) for a in states_in]
        try:
            step = extract(name, states_in, xs[1], states_out, outs[1], widths, int(X.shape[2]), opset=graph.opset)
        except StepError as exc:
            return general_miss(self.name, stack.name or name, "Concat", exc)
        lifted = lstm_of_step(step, graph.opset)  # two states that are an LSTM's: the native op
        if not isinstance(lifted, NoCell):
            return self._replace(graph, name, X, axis, lifted[0], widths[0], stack, outs, index)
        try:
            CellFlow(step)
        except StepError as exc:
            return general_miss(self.name, stack.name or name, "Concat", exc)
        out = stack.outputs[0]
        stack.outputs.clear()
        stack.inputs.clear()
        x_tm = time_major(graph, f"{name}/cell", X) if axis == 1 else X
        return build(graph, name, step, x_tm, Form.UNROLLED, index,
                     CellOutputs([(out, stack_axis)], [None] * len(states_in)), [out.name])


    @staticmethod
    def _cut(graph, reads, stack, outs, xs, dep, cut):
        """Where one step ends and the next begins, then step 1's states: (states in, their new values,
        nodes by step), or why not (a sentence). ``cut="outputs"``: step s is what step s's output is
        computed from that no earlier output is (the product of a state by its recurrent weight is the
        step's that uses it); ``cut="inputs"``: step s is what reads step s's input last (a state the
        step's output does not read stays in its step)."""
        T = len(reads)
        assign, by_step, step_of = _steps(graph, [[o] for o in outs], dep, by_input=cut == "inputs")
        # the chain: what the stacked output is computed from; nothing else may read inside it
        chain = set(assign) | {id(u.inputs[0]) for u in stack.inputs if u.inputs}
        for n in graph.nodes:
            if id(n) not in chain:
                continue
            for o in n.outputs:
                for c in o.outputs:
                    if id(c) not in chain and c is not stack:
                        return (f"step {step_of.get(id(o))}'s value {o.name!r} is read by {c.op} {c.name!r}, outside "
                                f"the stacked output (a chain whose steps' outputs are stacked and whose final state is "
                                f"read directly is not supported yet)")
                if o in graph.outputs:
                    return f"step {step_of.get(id(o))}'s value {o.name!r} is a graph output"
        return UnrolledCells._states(reads, xs, by_step, step_of, T)

    @staticmethod
    def _states(reads, xs, by_step, step_of, upto):
        """Steps 2 .. ``upto`` - 1 checked against step 1 (the last ones may lack what no output reads
        any more: a state only the next step would have read); step 1's states (what it reads from
        step 0) and their new values (what step 2 reads in the same places), or why not."""
        sig = {s_: _Signature(step_of, xs[s_], s_) for s_ in (1, 2)}
        reading = _read_nodes(reads)  # the nodes that read the input's steps differ by the step only
        model = Counter(repr(sig[1].node(n)) for n in by_step[1] if id(n) not in reading)
        for s_ in range(2, upto):
            here = _Signature(step_of, xs[s_], s_) if s_ > 2 else sig[2]
            got = Counter(repr(here.node(n)) for n in by_step[s_] if id(n) not in reading)
            if got != model if s_ == 2 else got - model:
                return f"step {s_} computes another cell than step 1"
        states_in, seen = [], set()
        for n in by_step[1]:
            for t in n.inputs:
                if t.name and not isinstance(t, gs.Constant) and step_of.get(id(t), -1) == 0 and id(t) not in seen:
                    if t is xs[0]:
                        return "step 1 reads step 0's input: not a state a cell carries"
                    seen.add(id(t))
                    states_in.append(t)
        if not states_in:
            return "step 1 reads nothing step 0 computed"
        in_step2 = defaultdict(list)
        for n in by_step[2]:
            in_step2[repr(sig[2].node(n))].append(n)
        states_out = []
        step1 = {id(m) for m in by_step[1]}
        for a in states_in:
            found = set()
            for n in a.outputs:
                if id(n) not in step1:
                    continue
                key = repr(sig[1].node(n))
                for p, t in enumerate(n.inputs):
                    if t is a:
                        found |= {id(m.inputs[p]) for m in in_step2.get(key, []) if step_of.get(id(m.inputs[p])) == 1}
            if len(found) != 1:
                return f"step 2 does not read one value of step 1 where step 1 reads {a.name!r} of step 0"
            fid = found.pop()
            states_out.append(next(t for n in by_step[1] for t in n.outputs if id(t) == fid))
        return states_in, states_out, by_step

    @staticmethod
    def _widths(states_in) -> str | None:
        """None when every state's width is known, else why not."""
        for k, a in enumerate(states_in):
            w = a.shape[-1] if a.shape else None
            if not isinstance(w, (int, np.integer)):
                return f"the width of its state {k} ({a.name!r}) is not known"
        return None

    @staticmethod
    def _from_zero(step0, reads, dep):
        """None when what step 0 reads besides its input is constants, zeros and what they compute."""
        consts = Constants()
        for n in step0:
            if id(n) in reads:
                continue
            todo = [t for t in n.inputs if t.name and dep.get(id(t), -1) < 0]
            while todo:
                t = todo.pop()
                if isinstance(t, gs.Constant) or _is_zero(t) or consts(t) is not None:
                    continue
                if not t.inputs:
                    return f"step 0 reads {t.name!r}, which is not provably zero (a general cell starts from zero states)"
                todo.extend(i for i in t.inputs[0].inputs if i.name)
        return None

    def _general_final(self, graph, reads, index):
        """A chain whose steps' outputs are not stacked: what follows the cell reads the last step's
        values only (``fc(h_T)``). What the last step computes that no earlier step computes is what
        follows (it reads what the cell computed last, its *final reads*); the tensors computed as the
        final reads are at every step are the steps' outputs, and the steps are told apart by them as
        for a stacked chain."""
        T = len(reads)
        xs = [r.x for r in reads]
        X = reads[0].source
        if T < 4 or X.shape is None or len(X.shape) != 3 or not isinstance(X.shape[2], (int, np.integer)):
            return None
        graph.toposort()
        dep = _steps_of(graph, xs)
        by_dep = defaultdict(list)
        for n in graph.nodes:
            d = max((dep.get(id(o), -1) for o in n.outputs), default=-1)
            if d >= 0:
                by_dep[d].append(n)
        reading = _read_nodes(reads)
        if not any(dep.get(id(i), -1) == 1 for n in by_dep[2] for i in n.inputs if i.name and id(n) not in reading):
            return None  # no step reads the previous one's values: no recurrence
        name = f"unrolled_{reads[0].name or index}"

        def miss(why):
            return general_miss(self.name, reads[-1].name or name, reads[-1].nodes[0].op, why)

        sigs = [_Signature(dep, xs[s_], s_) for s_ in range(T)]
        before = Counter(repr(sigs[T - 2].node(n)) for n in by_dep[T - 2])
        after = []
        for n in by_dep[T - 1]:  # in graph order: a node no earlier step computes follows the cell
            key = repr(sigs[T - 1].node(n))
            if before[key] > 0:
                before[key] -= 1
            else:
                after.append(n)
        after_ids = {id(n) for n in after}
        reads_ = []
        for n in after:
            for t in n.inputs:
                if t.name and dep.get(id(t), -1) >= 0 and not (t.inputs and id(t.inputs[0]) in after_ids) \
                        and all(t is not r for r in reads_):
                    if dep.get(id(t)) != T - 1:
                        return miss(f"{n.op} {n.name!r} reads {t.name!r} of step {dep.get(id(t))}, not a final value")
                    reads_.append(t)
        if not reads_:
            return miss("nothing after the chain reads its last step")
        outs = []  # per step, the tensors computed where the final reads are at the last step
        for s_ in range(T):
            here = []
            for r in reads_:
                n = r.inputs[0]
                j = next(i for i, o in enumerate(n.outputs) if o is r)
                same = [m for m in by_dep[s_] if id(m) not in after_ids and repr(sigs[s_].node(m)) == repr(sigs[T - 1].node(n))]
                if len(same) != 1:
                    return miss(f"step {s_} does not compute {r.name!r} once as the last step does")
                here.append(same[0].outputs[j])
            outs.append(here)
        assign, by_step, step_of = _steps(graph, outs, dep)
        for n in graph.nodes:  # nothing else reads inside the chain
            if id(n) in assign or id(n) in after_ids:
                continue
            for t in n.inputs:
                if id(t) in step_of:
                    return miss(f"{n.op} {n.name!r} reads {t.name!r} of step {step_of[id(t)]} of the chain")
        got = self._states(reads, xs, by_step, step_of, T)
        if isinstance(got, str):
            return miss(got)
        states_in, states_out = got[0], got[1]
        sig1, last = _Signature(step_of, xs[1], 1), _Signature(step_of, xs[T - 1], T - 1)
        finals = []
        for t in states_out:  # the final states: computed at the last step as step 1 computes its new ones
            n = t.inputs[0]
            j = next(i for i, o in enumerate(n.outputs) if o is t)
            same = [m for m in by_step[T - 1] if repr(last.node(m)) == repr(sig1.node(n))]
            if len(same) != 1:
                return miss(f"its last step does not compute {t.name!r} once as step 1 does")
            finals.append(same[0].outputs[j])
        final_ids = {id(t) for t in finals}
        for r in reads_:
            if id(r) not in final_ids:
                return miss(f"what follows the chain reads {r.name!r}, which is not one of its final states")
        widths = self._widths(states_in) or self._from_zero(by_step[0], _read_nodes(reads), dep)
        if isinstance(widths, str):
            return miss(widths)
        widths = [int(a.shape[-1]) for a in states_in]
        y_t = next(t for t, f in zip(states_out, finals) if id(f) == id(reads_[0]))
        try:
            step = extract(name, states_in, xs[1], states_out, y_t, widths, int(X.shape[2]), opset=graph.opset)
            CellFlow(step)
        except StepError as exc:
            return general_miss(self.name, reads[-1].name or name, reads[-1].nodes[0].op, exc)
        new_finals = []
        for k, t in enumerate(finals):  # what follows the cell reads the Scan's final states
            readers = [n for n in after if any(i is t for i in n.inputs)]
            if not readers:
                new_finals.append(None)
                continue
            new = gs.Variable(f"{name}/final{k}", dtype=np.float32)
            for n in readers:
                n.inputs = [new if i is t else i for i in n.inputs]
            new_finals.append(new)
        axis = reads[0].axis
        x_tm = time_major(graph, f"{name}/cell", X) if axis == 1 else X
        return build(graph, name, step, x_tm, Form.UNROLLED, index, CellOutputs([], new_finals))

def _read_nodes(reads) -> set[int]:
    """Ids of the nodes that read the input's steps (each differs from the others by its step only)."""
    return {id(n) for r in reads for n in r.nodes}


def _steps(graph, outs: list, dep: dict, by_input: bool = False):
    """Nodes by step: step s is what step s's outputs (``outs[s]``, a list) are computed from that no
    earlier step's are, or (``by_input``) the step of the last input each of those nodes reads.
    Returns (id(node) -> step, step -> nodes in graph order, id(tensor) -> step)."""
    assign: dict[int, int] = {}
    for s_, ts in enumerate(outs):
        todo = list(ts)
        while todo:
            t = todo.pop()
            if isinstance(t, gs.Constant) or not t.inputs or dep.get(id(t), -1) < 0 or id(t.inputs[0]) in assign:
                continue
            n = t.inputs[0]
            assign[id(n)] = max(dep.get(id(o), -1) for o in n.outputs) if by_input else s_
            todo.extend(i for i in n.inputs if i.name)
    by_step = defaultdict(list)
    for n in graph.nodes:
        if id(n) in assign:
            by_step[assign[id(n)]].append(n)
    return assign, by_step, {id(o): assign[id(n)] for n in graph.nodes if id(n) in assign for o in n.outputs}

def _steps_of(graph, xs) -> dict:
    """id(tensor) -> the last step whose input it is computed from (-1: none), in one pass."""
    dep = {id(x): s for s, x in enumerate(xs)}
    for n in graph.nodes:
        d = max((dep.get(id(i), -1) for i in n.inputs if i.name), default=-1)
        for o in n.outputs:
            dep.setdefault(id(o), d)
    return dep


class _Signature:
    """What a node of step ``s`` computes, as a nested tuple: its op, attributes and inputs, with
    step ``s``'s input as ``X``, any value of step ``s - 1`` as ``S`` and constants by value."""

    def __init__(self, dep: dict, x, s: int):
        self.dep, self.x, self.s, self.memo = dep, x, s, {}

    def tensor(self, t):
        if t is self.x:
            return ("X",)
        if isinstance(t, gs.Constant):
            v = np.asarray(t.values)
            return ("C", v.dtype.str, v.shape, hash(v.tobytes()))
        d = self.dep.get(id(t), -1)
        if d == self.s - 1:
            return ("S",)
        if d != self.s or not t.inputs:
            return ("V", t.name)
        n = t.inputs[0]
        return (self.node(n), next(i for i, o in enumerate(n.outputs) if o is t))

    def node(self, n):
        if id(n) not in self.memo:
            attrs = tuple(sorted((k, repr(np.asarray(v.values).tolist()) if isinstance(v, gs.Constant) else repr(v))
                                 for k, v in n.attrs.items()))
            self.memo[id(n)] = (n.op, attrs, tuple(self.tensor(i) if i.name else None for i in n.inputs))
        return self.memo[id(n)]
