"""Front-end: a cell in a ``Scan`` body, run as it is (the general cell form).

A forward ``Scan`` over one time-major input that carries state vectors from step to step is a
recurrence whatever its body computes: the body is the cell's step (``step.py``), its units are
found by the cell's unit flow (``cellflow.py``). This is also the form the ``Loop`` and unrolled
front-ends hand a general cell over in, so a model they rewrote is recognized here again.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .contract import Form, FrontEnd, NoMatch
from .general import canonical
from .general import miss as general_miss
from .native import time_major
from .step import StepError


class ScanCells(FrontEnd):
    name, reads_op = "scan", "Scan"

    def lift(self, graph, scan, index, ctx):
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
        for attr in ("scan_input_directions", "scan_output_directions"):
            if any(int(v) for v in scan.attrs.get(attr, [])):
                return miss(f"{attr} is not all 0: a scan that runs backwards is not supported yet (re-export it with "
                            f"native LSTM/GRU/RNN ops)")
        in_axis = int((scan.attrs.get("scan_input_axes") or [0])[0])
        out_axis = int((scan.attrs.get("scan_output_axes") or [0])[0])
        if in_axis not in (0, 1, -2) or out_axis not in (0, 1, -2):
            return miss("scans along an axis other than time-major or batch-major [N, T, I]")
        if in_axis or out_axis:  # batch-major (tf2onnx): made time-major, the Scan's outputs transposed back
            if in_axis:
                x = scan.inputs[K]
                scan.inputs[K] = time_major(graph, f"{name}/in", x)
            if out_axis:
                y = scan.outputs[K]
                y_tm = gs.Variable(f"{name}/Y_time_major", dtype=np.float32)
                scan.outputs[K] = y_tm
                graph.nodes.append(gs.Node("Transpose", f"{name}/out_batch_major", attrs={"perm": [1, 0, 2]},
                                           inputs=[y_tm], outputs=[y]))
            for attr in ("scan_input_axes", "scan_output_axes"):
                scan.attrs.pop(attr, None)
        try:
            return canonical(graph, scan, ctx.known.get(name, Form.SCAN), index, built=name in ctx.known)
        except StepError as exc:
            return general_miss(self.name, name, "Scan", exc)
