"""Front-end: a cell unrolled step by step (torch's default exporter for a cell written in plain ops,
``nn.LSTMCell`` called in a Python loop), re-rolled.

Each step reads one step of the input (``steps.py``: ``Gather``, a one-step ``Slice``, ``Split``,
``SplitToSequence``) and the previous step's values; a ``Concat`` stacks every step's output, or what
follows the cell reads the last step's values only. A one-state cell a native op computes (vanilla
RNN, GRU), read at every step as affine forms and the same at every step, becomes the native op; so
does a two-state step that is an LSTM's (checked in numbers against the step). Any other cell is a
general cell (``general.py``): the steps are told apart (``chain.py``), step 1 is cut out as the
cell's step and re-rolled into a ``Scan``.

The unrolled graph itself only runs at the length it was exported with; the lifted one runs at any
length. The check on traced rows (``verify_forms``) compares both on the model's own data.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import onnx_graphsurgeon as gs

from .affine import FormReader
from .cellflow import CellFlow
from .chain import Signature, cut_steps, not_from_zero, read_nodes, step_states, steps_by, steps_of, unknown_width
from .contract import Form, FrontEnd, NoMatch
from .general import CellOutputs, build
from .general import miss as general_miss
from .identify import NativeCell, NoCell, lstm_of_step, one_state
from .native import NativeRecurrence, _is_zero, lifted_op, time_major
from .step import StepError, extract
from .steps import step_reads
from .tensors import constant, depends


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
            cell = one_state(reader, reader.value(h), int(H))
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
        dep = steps_of(graph, xs)
        first = None
        for cut in ("outputs", "inputs"):
            got = cut_steps(graph, reads, stack, outs, xs, dep, cut)
            if not isinstance(got, str):
                break
            first = first or got
        else:
            return miss(first)
        states_in, states_out, by_step = got
        widths = unknown_width(states_in) or not_from_zero(by_step[0], read_nodes(reads), dep, graph.opset)
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
        dep = steps_of(graph, xs)
        by_dep = defaultdict(list)
        for n in graph.nodes:
            d = max((dep.get(id(o), -1) for o in n.outputs), default=-1)
            if d >= 0:
                by_dep[d].append(n)
        reading = read_nodes(reads)
        if not any(dep.get(id(i), -1) == 1 for n in by_dep[2] for i in n.inputs if i.name and id(n) not in reading):
            return None  # no step reads the previous one's values: no recurrence
        name = f"unrolled_{reads[0].name or index}"

        def miss(why):
            return general_miss(self.name, reads[-1].name or name, reads[-1].nodes[0].op, why)

        got = _cell_and_what_follows(graph, reads, xs, dep, by_dep)
        if isinstance(got, str):
            return miss(got)
        states_in, states_out, finals, after, final_reads, by_step = got
        widths = unknown_width(states_in) or not_from_zero(by_step[0], read_nodes(reads), dep, graph.opset)
        if isinstance(widths, str):
            return miss(widths)
        widths = [int(a.shape[-1]) for a in states_in]
        y_t = next(t for t, f in zip(states_out, finals) if id(f) == id(final_reads[0]))
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
        x_tm = time_major(graph, f"{name}/cell", X) if reads[0].axis == 1 else X
        return build(graph, name, step, x_tm, Form.UNROLLED, index, CellOutputs([], new_finals))


def _what_follows(by_dep, dep, sigs, T):
    """(the nodes after the chain — what the last step computes that no earlier step does —, the
    chain's values they read: its final reads), or why not."""
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
                    return f"{n.op} {n.name!r} reads {t.name!r} of step {dep.get(id(t))}, not a final value"
                reads_.append(t)
    if not reads_:
        return "nothing after the chain reads its last step"
    return after, reads_


def _outputs_at_every_step(final_reads, by_dep, sigs, after_ids, T):
    """Per step, the tensors computed where the final reads are at the last step, or why not."""
    outs = []
    for s_ in range(T):
        here = []
        for r in final_reads:
            n = r.inputs[0]
            j = next(i for i, o in enumerate(n.outputs) if o is r)
            same = [m for m in by_dep[s_] if id(m) not in after_ids
                    and repr(sigs[s_].node(m)) == repr(sigs[T - 1].node(n))]
            if len(same) != 1:
                return f"step {s_} does not compute {r.name!r} once as the last step does"
            here.append(same[0].outputs[j])
        outs.append(here)
    return outs


def _cell_and_what_follows(graph, reads, xs, dep, by_dep):
    """(states in, their new values, the final states, the nodes after the chain, its final reads,
    nodes by step) of a chain whose last step's values only are read, or why not."""
    T = len(reads)
    sigs = [Signature(dep, xs[s_], s_) for s_ in range(T)]
    got = _what_follows(by_dep, dep, sigs, T)
    if isinstance(got, str):
        return got
    after, final_reads = got
    after_ids = {id(n) for n in after}
    outs = _outputs_at_every_step(final_reads, by_dep, sigs, after_ids, T)
    if isinstance(outs, str):
        return outs
    assign, by_step, step_of = steps_by(graph, outs, dep)
    for n in graph.nodes:  # nothing else reads inside the chain
        if id(n) in assign or id(n) in after_ids:
            continue
        for t in n.inputs:
            if id(t) in step_of:
                return f"{n.op} {n.name!r} reads {t.name!r} of step {step_of[id(t)]} of the chain"
    got = step_states(reads, xs, by_step, step_of, T)
    if isinstance(got, str):
        return got
    states_in, states_out = got[0], got[1]
    sig1, last = Signature(step_of, xs[1], 1), Signature(step_of, xs[T - 1], T - 1)
    finals = []
    for t in states_out:  # the final states: computed at the last step as step 1 computes its new ones
        n = t.inputs[0]
        j = next(i for i, o in enumerate(n.outputs) if o is t)
        same = [m for m in by_step[T - 1] if repr(last.node(m)) == repr(sig1.node(n))]
        if len(same) != 1:
            return f"its last step does not compute {t.name!r} once as step 1 does"
        finals.append(same[0].outputs[j])
    final_ids = {id(t) for t in finals}
    for r in final_reads:
        if id(r) not in final_ids:
            return f"what follows the chain reads {r.name!r}, which is not one of its final states"
    return states_in, states_out, finals, after, final_reads, by_step
