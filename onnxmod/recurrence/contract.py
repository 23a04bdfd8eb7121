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

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import UnsupportedModelError
from ..units import UnitSelection

if TYPE_CHECKING:
    from ..cells import Cell


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


class Form(str, Enum):
    """What a model wrote a recurrence as (a front-end may hand it over in another form: a ``Loop``
    cell lifted into a native op keeps ``LOOP``). Compares equal to its value (``"loop"``)."""

    NATIVE = "native"  # an LSTM/GRU/RNN op
    LOOP = "loop"  # a Loop body
    SCAN = "scan"  # a Scan body
    UNROLLED = "unrolled"  # a chain of per-step copies of the cell

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Recurrence(ABC):
    """One recurrent layer behind the contract; each front-end's recurrences subclass it.

    Tensors: ``x`` (``[T, N, I]``, time-major) and ``y`` (every step's h, ``[T, D, N, H]``), and
    ``unit_outputs`` (every tensor the layer's units leave by, with their labels). Units are
    labelled ``d * H + j``. Numbers come from the cell's equations (``reference``,
    ``gates_from_trace``); rewrites remove units physically (``slice_units``) or input features
    (``slice_input``), fold constants into biases (``absorb``), hold units at 0 per row group
    (``silence_groups``, fused compositions) and apply per-step state masks (``mask_states``,
    unrolled modules).

    Fields a front-end sets (``__init__``): ``index``, ``name``, ``form``, ``watch`` (the model's own
    tensors that hold a lifted recurrence's states: compared with the lifted form on traced rows)
    and ``state_from_node`` (the recurrent node whose final state initialises this one, an encoder
    handing over to a decoder). Fields the pipeline sets: ``sites`` (the unit flow), ``source`` (the
    index of the recurrence feeding ``x``) and ``state_from`` (``state_from_node``'s recurrence).
    """

    what: ClassVar[str] = "hidden units"  # what the unit flow follows from a recurrence (in refusals)
    input_weight: ClassVar[bool] = True  # one input weight W: what mean compensation and embedding reduction fold into
    cell: Cell | None = None  # the cell's equations (None: a general cell, its equations are its ONNX body)

    index: int
    name: str
    form: Form
    watch: list[str]
    state_from_node: gs.Node | None
    sites: list
    source: int | None
    state_from: int | None

    def __init__(self, index: int, name: str, form: Form, watch=(), state_from_node: gs.Node | None = None):
        self.index, self.name, self.form = index, name, Form(form)
        self.watch = list(watch)
        self.state_from_node = state_from_node
        self.sites = []
        self.source = None
        self.state_from = None

    # ---- identity ---------------------------------------------------------------------------
    @property
    def op_type(self) -> str:
        """The cell's ONNX name (``LSTM``, ``GRU``, ``RNN``): what reports call the layer."""
        return self.cell.op_type

    @property
    def units(self) -> int:
        return self.hidden_size * self.directions

    @property
    def rule(self):
        """``relu`` when h is a ReLU's output, ``logistic`` for tanh/sigmoid-bounded cells."""
        return "relu" if self.output_activation() == "Relu" else "logistic"

    @property
    def lengths(self) -> gs.Variable | None:
        """``sequence_lens`` ``[N]``: row n's steps past it are padding (None: none)."""
        return None

    # ---- what every front-end provides ------------------------------------------------------
    @property
    @abstractmethod
    def hidden_size(self) -> int: ...

    @property
    @abstractmethod
    def directions(self) -> int: ...

    @property
    @abstractmethod
    def x(self) -> gs.Variable:
        """The input ``[T, N, I]`` (time-major)."""

    @property
    @abstractmethod
    def y(self) -> gs.Variable:
        """Every step's h ``[T, D, N, H]``."""

    @abstractmethod
    def reversed_directions(self) -> list[bool]:
        """Per direction, whether it reads the sequence backwards."""

    @abstractmethod
    def output_activation(self) -> str:
        """The name of the activation whose output is h (``Relu`` decides the identification rule)."""

    @abstractmethod
    def activations(self) -> list:
        """Per direction, the resolved (name, alpha, beta) of each activation slot."""

    @abstractmethod
    def describe(self) -> dict:
        """What ``inspect`` and reports say of the layer (name, index, form, op_type, hidden_size, ...)."""

    @abstractmethod
    def unit_outputs(self) -> list[tuple[gs.Variable, np.ndarray]]:
        """Every tensor the layer's units leave by, with the unit label of each position."""

    @abstractmethod
    def reader_nodes(self) -> list[gs.Node]:
        """The nodes that read this recurrence's ``x`` and initial states."""

    def state_input_index(self, node: gs.Node, tensor) -> int:
        """The input position at which ``node`` (one of ``reader_nodes``) reads state ``tensor``."""
        return next(i for i, x in enumerate(node.inputs) if x is tensor)

    @abstractmethod
    def reads(self, node: gs.Node, tensor) -> str | None:
        """``x`` or ``state`` when ``node`` is this recurrence reading ``tensor`` that way, else None."""

    @abstractmethod
    def weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(W, R, B) in the native ops' layout; raises ``UnsupportedModelError`` when it has none."""

    @abstractmethod
    def parameter_blocks(self) -> tuple[list, list[tuple[str, np.ndarray]]]:
        """What mechanistic fingerprints summarize: a header of sizes and the layer's parameters in
        blocks whose statistics do not depend on the order of its units (``block`` or ``diagonal``)."""

    @abstractmethod
    def reference(self, x: np.ndarray, masks=None, sequence_lens=None, initial=None) -> dict:
        """The layer run in numpy on ``x`` ``[T, N, I]``: ``Y``, ``Y_h`` (``Y_c``) and ``gates``."""

    @abstractmethod
    def gates_from_trace(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Every gate's activation rebuilt from traced ``x`` and ``Y``: ``[T, D, G, N, H]``."""

    @abstractmethod
    def silencer(self) -> dict | None:
        """``{gate: pre-activation offset}`` that holds a unit at 0 from its input alone, or None."""

    @abstractmethod
    def why_not_silenced(self) -> str | None:
        """None when ``silence_groups`` applies (fused compositions), else why not (one line)."""

    @abstractmethod
    def silence_groups(self, graph: gs.Graph, code, keeps: list[np.ndarray], prefix: str) -> None:
        """Fused compositions: the batch is K row groups (``code`` ``[K*B, K]``, one-hot); hold the units
        not in ``keeps[k]`` at exactly 0 on group k's rows, so each group computes module k."""

    @abstractmethod
    def slice_units(self, sel: UnitSelection) -> None:
        """Keep only ``sel.kept`` units (per direction), removing the others physically."""

    @abstractmethod
    def slice_input(self, positions: np.ndarray, zero: np.ndarray | None = None) -> None:
        """Keep input features ``positions``; zero the ones flagged in ``zero``."""

    @abstractmethod
    def set_input_weights(self, W: np.ndarray) -> None:
        """Replace the input weight W (the embedding's feature reduction)."""

    @abstractmethod
    def absorb(self, input_delta: np.ndarray | None = None, own: dict | None = None) -> None:
        """Fold constants into the biases (mean compensation of removed units)."""

    @abstractmethod
    def widen_input(self, x: gs.Variable, columns: np.ndarray) -> None:
        """Read ``x`` instead, whose extra features the new W ``columns`` weigh (fused compositions)."""

    @abstractmethod
    def mask_states(self, graph: gs.Graph, masks: list[np.ndarray], prefix: str, source: str) -> None:
        """Multiply the state after step t by ``masks[d][t]`` (``[T_max, H]`` per direction): unrolled
        modules. ``source`` names the model in refusals."""


@dataclass
class Recognition:
    """What the front-ends share while they run over one graph: the model's name (for refusals), the
    nodes that recurrences found so far read (``claimed``: a later front-end leaves them alone) and
    ``known``: the forms of the recurrences onnxmod lifted or built before, by node name (a graph
    recognized again — after the rewrite rules ran around lifted ops, or a copy of a normalized
    graph — holds native ops and Scans that onnxmod made, not the model)."""

    source: str
    known: Mapping[str, Form] = field(default_factory=dict)
    claimed: set = field(default_factory=set)
    found: int = 0  # recurrences found so far (numbers the next one)


class FrontEnd(ABC):
    """Recognizes one form of recurrence. ``find`` yields a ``Recurrence`` for each layer it
    recognizes (rewriting the graph into the form it hands over, if it must) and a ``NoMatch`` for
    each candidate it looked at and could not take; it leaves alone the nodes in ``ctx.claimed`` (read
    by recurrences that an earlier front-end found)."""

    name: ClassVar[str] = ""
    reads_op: ClassVar[str | None] = None  # the op type whose every node is a candidate (``Loop``, ``Scan``)

    def find(self, graph: gs.Graph, ctx: Recognition):
        """Every candidate ``lift``ed in turn; a lift that returns None was no recurrence after all."""
        k = 0
        for cand in list(self.candidates(graph)):
            if isinstance(cand, gs.Node) and id(cand) in ctx.claimed:
                continue  # an earlier front-end's recurrence (a general cell's Scan, say)
            res = self.lift(graph, cand, ctx.found + k, ctx)
            if res is None:
                continue
            k += isinstance(res, Recurrence)
            yield res

    def candidates(self, graph: gs.Graph) -> list:
        """What this front-end looks at (nodes, groups of nodes): by default every ``reads_op`` node."""
        if self.reads_op is None:
            raise TypeError(f"front-end {type(self).__name__} reads no op type: it must say what its candidates are")
        return [n for n in graph.nodes if n.op == self.reads_op]

    @abstractmethod
    def lift(self, graph: gs.Graph, candidate, index: int, ctx: Recognition):
        """A ``Recurrence`` (numbered ``index``), a ``NoMatch``, or None when ``candidate`` is no recurrence."""
