"""GRU (ONNX gate order z, r, h; PyTorch stores r, z, n and exports ``linear_before_reset=1``).

    z = f(xz + h Rz^T + Rbz)        r = f(xr + h Rr^T + Rbr)
    n = g(xh + (r . h) Rh^T + Rbh)              (linear_before_reset = 0)
    n = g(xh + r . (h Rh^T + Rbh))              (linear_before_reset = 1)
    h' = (1 - z) . n + z . h  =  n + z . (h - n)
"""
from __future__ import annotations

from .base import Cell, CellParams


class GRU(Cell):
    op_type = "GRU"
    gates = ("z", "r", "h")
    default_activations = ("Sigmoid", "Tanh")

    def step(self, be, xp, state, p: CellParams):
        H = p.hidden
        h = state["h"]
        (f, g) = p.acts
        xz, xr, xn = be.split(xp, [H] * 3)
        hz, hr = be.split(be.add(be.mm(h, be.weight("Rzr", p.R[:2 * H].T)), be.weight("Rbzr", p.Rb[:2 * H])), [H, H])
        z = be.act(self._pre(be, be.add(xz, hz), p), f)
        r = be.act(self._pre(be, be.add(xr, hr), p), f)
        Rn, Rbn = be.weight("Rn", p.R[2 * H:].T), be.weight("Rbn", p.Rb[2 * H:])
        if p.linear_before_reset:
            hn = be.mul(r, be.add(be.mm(h, Rn), Rbn))
        else:
            hn = be.add(be.mm(be.mul(r, h), Rn), Rbn)
        n = be.act(self._pre(be, be.add(xn, hn), p), g)
        h_new = be.add(n, be.mul(z, be.sub(h, n)))
        return {"h": h_new}, {"z": z, "r": r, "h": n}
