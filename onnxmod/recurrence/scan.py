"""Front-end: a cell in a ``Scan`` body, run as it is (the general cell form).

A forward ``Scan`` over one time-major input that carries state vectors from step to step is a
recurrence whatever its body computes: the body is the cell's step (``step.py``), its units are
found by the cell's unit flow (``cellflow.py``). This is also the form the ``Loop`` and unrolled
front-ends hand a general cell over in, so a model they rewrote is recognized here again.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from .contract import FrontEnd, NoMatch
from .general import canonical
from .step import StepError


class ScanCells(FrontEnd):
    name = "scan"

    def candidates(self, graph):
        return [n for n in graph.nodes if n.op == "Scan"]

    def lift(self, graph, scan, index):
        name = scan.name or f"Scan_{index}"
        scan.name = name
        body = scan.attrs.get("body")
        K = len(scan.inputs) - int(scan.attrs.get("num_scan_inputs", 0))

        def miss(why):
            return NoMatch(self.name, name, "Scan", why)

        if not isinstance(body, gs.Graph) or K < 1:
            return None  # carries no state: no recurrence (left to the graph)
        if int(scan.attrs.get("num_scan_inputs", 0)) != 1 or len(scan.outputs) != K + 1:
            return miss(f"scans {scan.attrs.get('num_scan_inputs')} inputs into {len(scan.outputs) - K} outputs; a "
                        f"cell scans one input into one per-step output")
        for attr in ("scan_input_axes", "scan_input_directions", "scan_output_axes", "scan_output_directions"):
            if any(int(v) for v in scan.attrs.get(attr, [])):
                return miss(f"{attr} is not all 0 (a reverse or batch-major scan is not supported yet)")
        try:
            return canonical(graph, scan, scan.attrs.get("_onnxmod_form", "scan"), index)
        except StepError as exc:
            return miss(f"as a general cell, {exc}")
