"""The recurrence contract: what the pipeline knows of a recurrent layer, whatever wrote it.

A *recurrence* is one recurrent layer of a model: a cell (``onnxmod.cells``) run over the time axis
in both, one or the other direction. Models write recurrences in several *forms* (a native
``LSTM``/``GRU``/``RNN`` op, a ``Loop``/``Scan`` body, a chain unrolled step by step); a *front-end*
recognizes one form and hands the pipeline a ``Recurrence``. Tracing, concern identification,
slicing, unrolled modules, fused compositions and encoder-decoder bridges talk to this class only:
none of them reads a node's input positions or branches on ``op_type``.

A front-end that does not recognize what it looked at says why, as data: a ``NoMatch``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import UnsupportedModelError
from ..units import UnitSelection


@dataclass(frozen=True)
class NoMatch:
    """Why a front-end did not recognize a node as a recurrence: one line, naming the node.
    ``error`` is the refusal's class when the pipeline must stop on it (a malformed op is an
    ``InputError``, an unsupported one an ``UnsupportedModelError``); ``final`` marks the general
    cell front-end's verdict, which a user is shown before a specialised front-end's."""

    frontend: str
    node: str
    op: str
    reason: str
    error: type = UnsupportedModelError
    final: bool = False  # the most general reading (a general cell) failed too: the reason reported first

    def __str__(self) -> str:
        return f"node {self.node!r} ({self.op}): {self.reason}"


class Recurrence:
    """One recurrent layer behind the contract; each front-end's recurrences subclass it.

    Tensors: ``x`` (``[T, N, I]``, time-major) and ``y`` (every step's h, ``[T, D, N, H]``), and
    ``unit_outputs`` (every tensor the layer's units leave by, with their labels). Units are
    labelled ``d * H + j``. Numbers come from the cell's equations (``reference``,
    ``gates_from_trace``); rewrites remove units physically (``slice_units``) or input features
    (``slice_input``), fold constants into biases (``absorb``), hold units at 0 per row group
    (``silence_groups``, fused compositions) and apply per-step state masks (``mask_states``,
    unrolled modules).
    """

    what = "hidden units"  # what the unit flow follows from a recurrence (in refusals)
    input_weight = True  # one input weight W (``weights``): what mean compensation and embedding reduction fold into
    form = ""  # "native", "loop", "scan", "unrolled", ...
    cell = None  # onnxmod.cells.Cell

    def __init__(self, index: int, name: str):
        self.index, self.name = index, name
        self.sites: list = []  # filled by the unit flow: where the units go
        self.source: int | None = None  # index of the recurrence feeding x, if any
        self.state_from: int | None = None  # index of the recurrence whose final state initialises this one
        self.state_from_recurrence = None

    # ---- identity ---------------------------------------------------------------------------
    @property
    def op_type(self) -> str:
        """The cell's ONNX name (``LSTM``, ``GRU``, ``RNN``): what reports call the layer."""
        return self.cell.op_type

    @property
    def units(self) -> int:
        return self.hidden_size * self.directions

    @property
    def rule(self) -> str:
        """``relu`` when h is a ReLU's output, ``logistic`` for tanh/sigmoid-bounded cells."""
        return "relu" if self.output_activation() == "Relu" else "logistic"

    # ---- what every front-end provides ------------------------------------------------------
    hidden_size: int
    directions: int
    x: gs.Variable
    y: gs.Variable

    lengths: gs.Variable | None  # sequence_lens [N]: row n's steps past it are padding (None: none)

    def reversed_directions(self) -> list[bool]:
        """Per direction, whether it reads the sequence backwards."""

    def output_activation(self) -> str: ...

    def activations(self) -> list: ...

    def describe(self) -> dict: ...

    def unit_outputs(self) -> list[tuple[gs.Variable, np.ndarray]]: ...

    def reader_nodes(self) -> list[gs.Node]:
        """The nodes that read this recurrence's ``x`` and initial states."""

    def state_input_index(self, node: gs.Node, tensor) -> int:
        """The input position at which ``node`` (one of ``reader_nodes``) reads state ``tensor``."""

    def reads(self, node: gs.Node, tensor) -> str | None:
        """``x`` or ``state`` when ``node`` is this recurrence reading ``tensor`` that way, else None."""

    def weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def parameter_blocks(self) -> tuple[list, list[tuple[str, np.ndarray]]]:
        """What mechanistic fingerprints summarize: a header of sizes and the layer's parameters in
        blocks whose statistics do not depend on the order of its units (``block`` or ``diagonal``)."""

    def reference(self, x: np.ndarray, masks=None, sequence_lens=None, initial=None) -> dict: ...

    def gates_from_trace(self, x: np.ndarray, y: np.ndarray) -> np.ndarray: ...

    def silencer(self) -> dict | None: ...

    def why_not_silenced(self) -> str | None:
        """None when ``silence_groups`` applies (fused compositions), else why not (one line)."""

    def silence_groups(self, graph: gs.Graph, code, keeps: list[np.ndarray], prefix: str) -> None:
        """Fused compositions: the batch is K row groups (``code`` ``[K*B, K]``, one-hot); hold the units
        not in ``keeps[k]`` at exactly 0 on group k's rows, so each group computes module k."""

    def slice_units(self, sel: UnitSelection) -> None: ...

    def slice_input(self, positions: np.ndarray, zero: np.ndarray | None = None) -> None: ...

    def set_input_weights(self, W: np.ndarray) -> None: ...

    def absorb(self, input_delta: np.ndarray | None = None, own: dict | None = None) -> None: ...

    def widen_input(self, x: gs.Variable, columns: np.ndarray) -> None: ...

    def mask_states(self, graph: gs.Graph, masks: list[np.ndarray], prefix: str) -> None: ...


class FrontEnd:
    """Recognizes one form of recurrence. ``find`` yields a ``Recurrence`` for each layer it
    recognizes (rewriting the graph into the form it hands over, if it must) and a ``NoMatch`` for
    each candidate it looked at and could not take; it leaves alone the nodes in ``claimed`` (read
    by recurrences that an earlier front-end found)."""

    name = ""

    def find(self, graph: gs.Graph, source: str, first_index: int, claimed: set):
        """Every candidate ``lift``ed in turn; a lift that returns None was no recurrence after all."""
        k = 0
        for cand in list(self.candidates(graph)):
            if isinstance(cand, gs.Node) and id(cand) in claimed:
                continue  # an earlier front-end's recurrence (a general cell's Scan, say)
            res = self.lift(graph, cand, first_index + k)
            if res is None:
                continue
            k += isinstance(res, Recurrence)
            yield res

    reads_op: str | None = None  # the op type whose every node is a candidate (``Loop``, ``Scan``)

    def candidates(self, graph: gs.Graph):
        """What this front-end looks at (nodes, groups of nodes): by default every ``reads_op`` node."""
        if self.reads_op is None:  # pragma: no cover - a front-end says what it reads
            raise NotImplementedError
        return [n for n in graph.nodes if n.op == self.reads_op]

    def lift(self, graph: gs.Graph, candidate, index: int):  # pragma: no cover - abstract
        """A ``Recurrence`` (numbered ``index``), a ``NoMatch``, or None when ``candidate`` is no recurrence."""
        raise NotImplementedError
