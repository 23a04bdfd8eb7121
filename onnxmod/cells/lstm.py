"""LSTM (ONNX gate order i, o, f, c; PyTorch stores i, f, g, o; Keras i, f, c, o).

    i = f(xi + h Ri^T + Rbi + Pi . c)        c~ = g(xc + h Rc^T + Rbc)
    f = f(xf + h Rf^T + Rbf + Pf . c)        c' = f . c + i . c~
    o = f(xo + h Ro^T + Rbo + Po . c')       h' = o . h(c')

``clip`` bounds every pre-activation; ``input_forget`` couples f = 1 - i.
"""
from __future__ import annotations

from .base import Cell, CellParams


class LSTM(Cell):
    op_type = "LSTM"
    gates = ("i", "o", "f", "c")
    states = ("h", "c")
    default_activations = ("Sigmoid", "Tanh", "Tanh")

    def monitored(self):
        return self.gates + ("cell",)

    def step(self, be, xp, state, p: CellParams, hr=None):
        H = p.hidden
        h, c = state["h"], state["c"]
        (f, g, hh) = p.acts
        if hr is None:  # h R^T + Rb (a caller may pass it precomputed for every step at once)
            hr = be.add(be.mm(h, be.weight("Rt", p.R.T)), be.weight("Rb", p.Rb))
        zi, zo, zf, zc = be.split(be.add(xp, hr), [H] * 4)
        if p.P is not None:
            Pi, Po, Pf = (be.weight(f"P{k}", p.P[j * H:(j + 1) * H]) for j, k in enumerate("iof"))
            zi, zf = be.add(zi, be.mul(Pi, c)), be.add(zf, be.mul(Pf, c))
        i = be.act(self._pre(be, zi, p), f)
        fg = be.one_minus(i) if p.input_forget else be.act(self._pre(be, zf, p), f)
        ct = be.act(self._pre(be, zc, p), g)
        c_new = be.add(be.mul(fg, c), be.mul(i, ct))
        if p.P is not None:
            zo = be.add(zo, be.mul(Po, c_new))
        o = be.act(self._pre(be, zo, p), f)
        h_new = be.mul(o, be.act(c_new, hh))
        return {"h": h_new, "c": c_new}, {"i": i, "o": o, "f": fg, "c": ct, "cell": c_new}
