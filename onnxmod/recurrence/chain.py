"""Telling an unrolled chain's steps apart: which nodes belong to which step, what a step computes
(a ``Signature`` that names the step's input ``X``, the previous step's values ``S`` and constants by
value), which values a step hands the next one (its states), and whether every later step computes
what step 1 computes. Used by the unrolled-cell front-end (``unrolled.py``).
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import onnx_graphsurgeon as gs

from .native import _is_zero
from .step import Constants


def read_nodes(reads) -> set[int]:
    """Ids of the nodes that read the input's steps (each differs from the others by its step only)."""
    return {id(n) for r in reads for n in r.nodes}



def steps_by(graph, outs: list, dep: dict, by_input: bool = False):
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


def steps_of(graph, xs) -> dict:
    """id(tensor) -> the last step whose input it is computed from (-1: none), in one pass."""
    dep = {id(x): s for s, x in enumerate(xs)}
    for n in graph.nodes:
        d = max((dep.get(id(i), -1) for i in n.inputs if i.name), default=-1)
        for o in n.outputs:
            dep.setdefault(id(o), d)
    return dep


class Signature:
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


def cut_steps(graph, reads, stack, outs, xs, dep, cut):
    """Where one step ends and the next begins, then step 1's states: (states in, their new values,
    nodes by step), or why not (a sentence). ``cut="outputs"``: step s is what step s's output is
    computed from that no earlier output is (the product of a state by its recurrent weight is the
    step's that uses it); ``cut="inputs"``: step s is what reads step s's input last (a state the
    step's output does not read stays in its step)."""
    T = len(reads)
    assign, by_step, step_of = steps_by(graph, [[o] for o in outs], dep, by_input=cut == "inputs")
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
    return step_states(reads, xs, by_step, step_of, T)


def step_states(reads, xs, by_step, step_of, upto):
    """Steps 2 .. ``upto`` - 1 checked against step 1 (the last ones may lack what no output reads
    any more: a state only the next step would have read); step 1's states (what it reads from
    step 0) and their new values (what step 2 reads in the same places), or why not."""
    sig = {s_: Signature(step_of, xs[s_], s_) for s_ in (1, 2)}
    reading = read_nodes(reads)  # the nodes that read the input's steps differ by the step only
    model = Counter(repr(sig[1].node(n)) for n in by_step[1] if id(n) not in reading)
    for s_ in range(2, upto):
        here = Signature(step_of, xs[s_], s_) if s_ > 2 else sig[2]
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


def unknown_width(states_in) -> str | None:
    """None when every state's width is known, else why not."""
    for k, a in enumerate(states_in):
        w = a.shape[-1] if a.shape else None
        if not isinstance(w, (int, np.integer)):
            return f"the width of its state {k} ({a.name!r}) is not known"
    return None


def not_from_zero(step0, reads, dep, opset=None) -> str | None:
    """None when what step 0 reads besides its input is constants, zeros and what they compute."""
    consts = Constants(opset=opset)
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
