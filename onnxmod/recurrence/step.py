"""A cell's step function, cut out of whatever form a model wrote it in, as a graph of its own.

A general cell (a ``Loop`` body, one step of an unrolled chain) is read as its *step*: a graph
from the previous states ``s_1 … s_K`` (each ``[N, W_k]``) and the input step ``x_t`` (``[N, I]``)
to the new states ``s_1' … s_K'`` and the per-step output ``y_t``. Its inputs and outputs are in
``Scan``'s order (states, then the scanned input; new states, then the scanned output), so the
step *is* the body of the ``Scan`` the general front-end runs the cell as.

Everything the step reads that depends neither on ``x_t`` nor on the states (the weights, the
constraints a model computes from raw parameters before its loop: a norm cap, a clip) is
evaluated once, here, and bound as a constant: the step then holds exactly the numbers it runs
on, and slicing a unit out of a weight does not change what another unit's constraint computes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .evaluate import NotEvaluated, evaluate


class StepError(Exception):
    """Why a step cannot be cut out or followed: the node (its name and op) and the reason."""

    def __init__(self, node, reason: str):
        self.node, self.reason = node, reason
        name = getattr(node, "name", None) or getattr(node, "op", None) or str(node)
        op = getattr(node, "op", "")
        super().__init__(f"node {name!r}{f' ({op})' if op else ''}: {reason}")


@dataclass
class Step:
    """The step function: ``graph`` (inputs ``[*states, x_t]``, outputs ``[*new_states, y_t]``)."""

    graph: gs.Graph
    name: str

    @property
    def n_states(self) -> int:
        return len(self.graph.inputs) - 1

    @property
    def states(self) -> list:
        return self.graph.inputs[:-1]

    @property
    def x(self):
        return self.graph.inputs[-1]

    @property
    def new_states(self) -> list:
        return self.graph.outputs[:self.n_states]

    @property
    def y(self):
        return self.graph.outputs[self.n_states]

    @property
    def widths(self) -> list[int]:
        return [int(s.shape[-1]) for s in self.states]

    @property
    def input_size(self) -> int:
        return int(self.x.shape[-1])


class Constants:
    """Values of tensors computed from constants only (memoized; dtype kept), by the reference
    evaluator (``evaluate.py``) one node at a time under ``opset``; None for anything that reads a
    graph input or a loop variable."""

    def __init__(self, dynamic: set | None = None, opset: int | None = None):
        self.memo: dict[int, np.ndarray | None] = {}
        self.dynamic = dynamic if dynamic is not None else set()
        self.opset = opset

    def __call__(self, t) -> np.ndarray | None:
        if id(t) in self.memo:
            return self.memo[id(t)]
        todo = [t]
        while todo:  # post-order without recursion: unrolled chains are thousands of nodes deep
            u = todo[-1]
            if id(u) in self.memo:
                todo.pop()
                continue
            if isinstance(u, gs.Constant):
                self.memo[id(u)] = np.asarray(u.values)
                todo.pop()
                continue
            if id(u) in self.dynamic or not u.inputs or any(isinstance(v, gs.Graph)
                                                            for v in u.inputs[0].attrs.values()):
                self.memo[id(u)] = None
                todo.pop()
                continue
            node = u.inputs[0]
            pending = [i for i in node.inputs if i.name and id(i) not in self.memo]
            if pending:
                todo.extend(pending)
                continue
            todo.pop()
            args = [self.memo[id(i)] if i.name else None for i in node.inputs]
            if any(a is None for a, i in zip(args, node.inputs) if i.name):
                for o in node.outputs:
                    self.memo[id(o)] = None
                continue
            try:
                res = evaluate(node, args, self.opset)
            except NotEvaluated:
                res = None
            for k, o in enumerate(node.outputs):
                self.memo[id(o)] = None if res is None else res[k]
        return self.memo[id(t)]


def forward_closure(starts) -> set:
    """Ids of every tensor computed from any of ``starts`` (the starts included)."""
    seen = {id(t) for t in starts}
    todo = list(starts)
    while todo:
        t = todo.pop()
        for node in t.outputs:
            for o in node.outputs:
                if id(o) not in seen:
                    seen.add(id(o))
                    todo.append(o)
    return seen


def extract(name: str, states_in: list, x_t, states_out: list, y_t, widths: list[int], input_size: int,
            consts: Constants | None = None, opset: int | None = None) -> Step:
    """Cut the step out of a graph: every node between (``states_in``, ``x_t``) and (``states_out``,
    ``y_t``), copied into a new graph whose other inputs are bound to their constant values (folded
    under ``opset``, the graph's). Raises ``StepError`` naming the node that reads something else (the
    step index, a graph input)."""
    dynamic = forward_closure([*states_in, x_t])
    consts = consts or Constants(dynamic, opset)
    consts.dynamic = dynamic
    new: dict[int, object] = {}
    p = name
    for k, (s, w) in enumerate(zip(states_in, widths)):
        new[id(s)] = gs.Variable(f"{p}/state{k}", dtype=np.float32, shape=["N", int(w)])
    new[id(x_t)] = gs.Variable(f"{p}/x_t", dtype=np.float32, shape=["N", int(input_size)])
    needed: dict[int, gs.Node] = {}  # the step's nodes, found backwards from its outputs
    todo = [(t, None) for t in [*states_out, y_t]]
    seen: set[int] = set()
    while todo:
        t, reader = todo.pop()
        if id(t) in new or id(t) in seen:
            continue
        seen.add(id(t))
        if id(t) not in dynamic:
            v = consts(t)
            if v is None:
                raise StepError(reader or t, f"reads {t.name!r}, which is neither the input step, a state nor a "
                                             f"constant (a loop counter or a graph input)")
            new[id(t)] = gs.Constant(f"{p}/{t.name or len(new)}", np.ascontiguousarray(v))
            continue
        node = t.inputs[0]
        if any(isinstance(v, gs.Graph) for v in node.attrs.values()):
            raise StepError(node, "control flow inside the cell")
        needed[id(node)] = node
        todo.extend((i, node) for i in node.inputs if i.name)
    order: list[gs.Node] = []
    for node in _topological(list(needed.values())):
        outs = []
        for o in node.outputs:
            if id(o) not in new:
                new[id(o)] = gs.Variable(o.name, dtype=o.dtype)  # the model's own names: unique already
            outs.append(new[id(o)])
        ins = [new[id(i)] if i.name else gs.Variable.empty() for i in node.inputs]
        order.append(gs.Node(node.op, node.name or f"{p}/{node.op}_{len(order)}", attrs=dict(node.attrs), inputs=ins,
                             outputs=outs, domain=node.domain))
    outputs = []
    for k, t in enumerate([*states_out, y_t]):
        tag = f"state{k}_next" if k < len(states_out) else "y_t"
        o = gs.Variable(f"{p}/{tag}", dtype=np.float32)
        order.append(gs.Node("Identity", f"{p}/{tag}", inputs=[new[id(t)]], outputs=[o]))
        outputs.append(o)
    g = gs.Graph(nodes=order, inputs=[*(new[id(s)] for s in states_in), new[id(x_t)]], outputs=outputs, name=p)
    return Step(g.cleanup().toposort(), name)


def _topological(nodes: list) -> list:
    """``nodes`` ordered so that each comes after the nodes (of the list) it reads from."""
    ids = {id(n) for n in nodes}
    deps = {id(n): {id(i.inputs[0]) for i in n.inputs if i.name and i.inputs and id(i.inputs[0]) in ids}
            for n in nodes}
    out, done = [], set()
    while len(out) < len(nodes):
        ready = [n for n in nodes if id(n) not in done and deps[id(n)] <= done]
        if not ready:
            raise StepError(nodes[0], "the cell's dataflow has a cycle")
        for n in ready:
            done.add(id(n))
            out.append(n)
    return out
