"""What the guard and the size search judge a composition by: one small interface per metric.

``metric(pred, reference) -> float`` scores predicted labels against a reference, and the search
needs three more things of a metric: which answers count (``scored``), which are right
(``correct``: the paired loss bound counts answers turned wrong and turned right), and how a
composition votes from its modules' log-odds (``margin``, ``vote``). ``StepAccuracy`` is accuracy
over labelled samples or steps (every head but CTC); ``ctc.StringAccuracy`` judges CTC models by
their greedy-decoded strings.
"""
from __future__ import annotations

import numpy as np


class StepAccuracy:
    """Accuracy over labelled answers (``-1`` never counts); the reference is the labels ``y``."""

    name = "accuracy"

    def correct(self, pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return pred == ref

    def scored(self, ref: np.ndarray) -> np.ndarray:
        return ref >= 0

    def __call__(self, pred: np.ndarray, ref: np.ndarray) -> float:
        valid = ref >= 0
        return float((pred[valid] == ref[valid]).mean()) if valid.any() else float("nan")

    def margin(self, logits: np.ndarray) -> np.ndarray:
        """A module's log-odds of its class over the rest (what compositions vote on)."""
        return logits[..., 1] - logits[..., 0]

    def vote(self, class_ids: np.ndarray, margins: np.ndarray) -> np.ndarray:
        return np.asarray(class_ids)[margins.argmax(axis=-1)]
