"""Concern identification (SPEC §3, steps 2–4): which hidden units serve each class.

For each class (the *dominant* one) and each recurrent layer, every unit gets a score from the
traced hidden states of positive vs negative observations:

* **logistic** layers (LSTM, GRU, tanh RNN): ``d = ct(|h| on positives) - ct(|h| on negatives)``,
  ``ct`` = mean after discarding outliers (keep x with ``|x - median| / MAD < mad_cutoff``; all when
  MAD = 0). Candidates for removal: ``d < 0``.
* **relu** layers: ``d = active rate on positives - active rate on negatives`` (active: h > 0).
  Candidates: ``d <= relu_threshold`` (rule ``diff``, the reference implementation's), or units
  never active on positives (rule ``inactive``, the paper's text). **Tangling identification**
  (``tangling=True``) then restores removed units active on at least ``tangling_rate`` of the
  negatives, so the module can still recognise "not this class".

Candidates are removed most-negative first until ``removal_cap`` of the layer's units (all
directions) are gone. Rolled mode decides once per layer; unrolled mode once per layer and step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import progress as _progress
from .errors import UsageError
from .sampling import SamplingConfig


@dataclass
class ConcernConfig:
    removal_cap: float = 0.05
    mad_cutoff: float = 2.0
    relu_rule: str = "diff"
    relu_threshold: float = -0.5
    tangling: bool = False
    tangling_rate: float = 0.5
    rank_all: bool = False  # size search: every unit is a candidate, ranked by score
    unrolled: str = "output"  # how per-step concerns apply: cut step outputs, or zero the state
    compensate: bool = False  # fold removed units' mean activation into their consumers' biases
    guard: float | None = 0.5  # back the removal cap off while validation accuracy drops more (points)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def validate(self) -> None:
        if not 0.0 <= self.removal_cap <= 1.0:
            raise UsageError(f"removal cap {self.removal_cap} is outside 0..1")
        if self.unrolled not in ("output", "state"):
            raise UsageError(f"unrolled semantics {self.unrolled!r} is not one of output, state")
        if self.relu_rule not in ("diff", "inactive"):
            raise UsageError(f"relu rule {self.relu_rule!r} is not one of diff, inactive")
        if self.mad_cutoff <= 0:
            raise UsageError("MAD cutoff must be positive")
        if self.sampling.positives < 1 or self.sampling.negatives < 1:
            raise UsageError("positives and negatives must be at least 1")

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "sampling"}
        d["sampling"] = dict(self.sampling.__dict__)
        return d


@dataclass
class Concern:
    """The units one class keeps. ``keep[op_index]``: bool ``[U]`` (rolled) or ``[T, U]`` (unrolled),
    U = directions × hidden size, unit id ``d * H + j``."""

    class_index: int
    class_name: str
    mode: str
    keep: dict[int, np.ndarray]
    positives: int = 0
    negatives: int = 0
    vocabulary: np.ndarray | None = None  # bool [V]: embedding rows kept (size search); None = all
    embedding_rank: int | None = None  # embedding features kept (size search, Model.reduce_embedding); None = all

    def kept_fraction(self) -> float:
        kept = sum(int(k.sum()) for k in self.keep.values())
        total = sum(int(k.size) for k in self.keep.values())
        return kept / total if total else 1.0


def central_tendency(a: np.ndarray, cutoff: float) -> np.ndarray:
    """Per column of ``a`` ``[n, U]``: mean of the values within ``cutoff`` MADs of the median."""
    if a.shape[0] == 0:
        return np.zeros(a.shape[1:], dtype=np.float64)
    at = np.ascontiguousarray(a.T)  # [U, n]: the medians partition along contiguous memory
    med = np.median(at, axis=1)
    dev = np.abs(at - med[:, None])
    mad = np.median(dev, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inlier = np.where(mad[:, None] > 0, dev / np.where(mad > 0, mad, 1)[:, None] < cutoff, True)
    n = inlier.sum(axis=1)
    total = np.where(inlier, at, 0).sum(axis=1, dtype=np.float64)
    return np.where(n > 0, total / np.maximum(n, 1), med).astype(np.float64)


def unit_scores(pos: np.ndarray, neg: np.ndarray, rule, cfg: ConcernConfig):
    """Score every unit; returns (score, candidate mask, negative active rate or None).

    ``rule``: ``logistic`` or ``relu`` for the whole layer, or one of them per unit (a cell whose
    state vectors use different activations: each unit is scored by its own rule)."""
    if not isinstance(rule, str):
        rule = np.asarray(rule)
        if len(set(rule.tolist())) == 1:
            return unit_scores(pos, neg, str(rule[0]), cfg)
        s_l, c_l, _ = unit_scores(pos, neg, "logistic", cfg)
        s_r, c_r, r_r = unit_scores(pos, neg, "relu", cfg)
        relu = np.resize(rule == "relu", s_l.shape)  # gate monitoring scores [G*U]: the rule repeats per gate
        return np.where(relu, s_r, s_l), np.where(relu, c_r, c_l), np.where(relu, r_r, 0.0)
    if rule == "relu":
        rp = (pos > 0).mean(axis=0) if pos.shape[0] else np.zeros(pos.shape[1])
        rn = (neg > 0).mean(axis=0) if neg.shape[0] else np.zeros(neg.shape[1])
        score = rp - rn
        cand = score <= cfg.relu_threshold if cfg.relu_rule == "diff" else rp == 0
        return score, cand, rn
    score = central_tendency(np.abs(pos), cfg.mad_cutoff) - central_tendency(np.abs(neg), cfg.mad_cutoff)
    return score, score < 0, None


@dataclass
class LayerScores:
    """One layer's unit scores at one step for one class (``None`` when there was no evidence)."""

    score: np.ndarray | None
    candidate: np.ndarray | None
    neg_rate: np.ndarray | None
    units: int


def score_layer(pos: np.ndarray, neg: np.ndarray, rule: str, cfg: ConcernConfig) -> LayerScores:
    """Scores from observations ``pos`` ``[n, U]`` and ``neg`` ``[m, U]``.

    Gate monitoring passes ``[n, G, U]``: every gate is scored on its own activation and a unit is
    a candidate only when all its gates are (its score is the highest gate score), because
    removing a unit takes it out of every gate.
    """
    U = pos.shape[-1]
    if pos.shape[0] == 0 or neg.shape[0] == 0:
        return LayerScores(None, None, None, U)  # no evidence: remove nothing
    if pos.ndim == 3:
        G = pos.shape[1]
        s, c, r = unit_scores(pos.reshape(len(pos), -1).astype(np.float32),
                              neg.reshape(len(neg), -1).astype(np.float32), rule, cfg)
        score, cand = s.reshape(G, U).max(axis=0), c.reshape(G, U).all(axis=0)
        neg_rate = None if r is None else r.reshape(G, U).max(axis=0)
    else:
        score, cand, neg_rate = unit_scores(pos.astype(np.float32), neg.astype(np.float32), rule, cfg)
    return LayerScores(score, cand, neg_rate, U)


def select(ls: LayerScores, rule: str, cfg: ConcernConfig, cap: float | None = None) -> np.ndarray:
    """Keep mask ``[U]``: remove candidates most-negative first, at most ``cap`` of the units."""
    keep = np.ones(ls.units, dtype=bool)
    if ls.score is None:
        return keep
    n = int(np.floor((cfg.removal_cap if cap is None else cap) * ls.units))
    idx = np.arange(ls.units) if cfg.rank_all else np.flatnonzero(ls.candidate)
    idx = idx[np.argsort(ls.score[idx], kind="stable")][:n]
    keep[idx] = False
    relu = (rule == "relu") if isinstance(rule, str) else (np.asarray(rule) == "relu")
    if np.any(relu) and cfg.tangling and ls.neg_rate is not None:
        keep |= (~keep) & (ls.neg_rate >= cfg.tangling_rate) & relu
    return keep


@dataclass
class ClassScores:
    class_index: int
    class_name: str
    mode: str
    layers: dict[int, list[LayerScores]]  # per layer, per step (one entry in rolled mode)
    rules: list[str]
    positives: int
    negatives: int

    def concern(self, cfg: ConcernConfig, cap: float | None = None) -> Concern:
        keep = {}
        for k, steps in self.layers.items():
            masks = [select(ls, self.rules[k], cfg, cap) for ls in steps]
            keep[k] = masks[0] if self.mode == "rolled" else np.stack(masks)
        return Concern(self.class_index, self.class_name, self.mode, keep, self.positives, self.negatives)


def score_units(hidden: list[np.ndarray], rules: list[str], class_names: list[str], cfg: ConcernConfig,
                mode: str, observations, classes=None) -> list[ClassScores]:
    """Every unit's score for every class; ``ClassScores.concern(cfg, cap)`` then selects, cheaply.

    ``hidden[k]``: op k's traced states ``[N, T, U]`` (all ops share N and T), or its gate
    activations ``[N, T, G, U]`` with gate monitoring. ``observations(c, step)`` returns
    (positive, negative) flat indices into ``[N * T]``; ``step`` is None in rolled mode (one
    decision per layer) and 0..T-1 in unrolled mode. ``classes``: the class indices to score
    (default: every class of ``class_names``); the cost is linear in their number.
    """
    T = hidden[0].shape[1]
    steps = [None] if mode == "rolled" else list(range(T))
    flat = [h.reshape(-1, *h.shape[2:]) for h in hidden]
    out = []
    for c in _progress.each(range(len(class_names)) if classes is None else classes, "classes"):
        name = class_names[c]
        layers = {k: [] for k in range(len(hidden))}
        npos = nneg = 0
        for t in steps:
            pos, neg = observations(c, t)
            npos, nneg = npos + len(pos), nneg + len(neg)
            for k, (h, rule) in enumerate(zip(flat, rules)):
                layers[k].append(score_layer(h[pos], h[neg], rule, cfg))
        out.append(ClassScores(c, name, mode, layers, list(rules), npos, nneg))
    return out
