"""Downstream evaluation of fingerprints on a model zoo, as the paper does it (SPEC §9, issue 16).

From each representation of a member (functional: outputs on probes drawn from the zoo's
unlabelled inputs; interactive: probes extended by the member's own answers, token zoos only;
mechanistic: unit-permutation-invariant weight statistics) predict, on held-out members,

  (i)  its test accuracy: ridge regression (alpha chosen by 5-fold CV on the training members),
       R^2 and Kendall's tau-b on the held-out members;
  (ii) the exact task it was trained on: multinomial logistic regression and 1/5-NN accuracy
       (with the majority-class baseline).

Learners are numpy only. Members are split 70/30 by a seeded permutation, repeated over
``--repeats`` seeds (mean ± std). Features: NaN padding -> 0, standardized on training members.

    python tools/zoo_downstream.py out/zoo/digits out/zoo/tomita [--probes 128] [--ray]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxmod import fingerprint as fp  # noqa: E402
from onnxmod.io import read_json  # noqa: E402


def kendall_tau(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    da, db = np.sign(a[:, None] - a[None, :]), np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(a.size, 1)
    da, db = da[iu], db[iu]
    n0, n1, n2 = float(da.size), float((da == 0).sum()), float((db == 0).sum())
    den = np.sqrt((n0 - n1) * (n0 - n2))
    return float((da * db).sum() / den) if den > 0 else 0.0


def standardize(tr, te):
    tr, te = np.nan_to_num(tr), np.nan_to_num(te)
    mu, sd = tr.mean(0), tr.std(0)
    sd[sd == 0] = 1
    return (tr - mu) / sd, (te - mu) / sd


def ridge_fit(X, y, alpha):
    Xa = np.hstack([X, np.ones((X.shape[0], 1))])
    reg = alpha * np.eye(Xa.shape[1])
    reg[-1, -1] = 0
    if Xa.shape[1] > Xa.shape[0]:  # dual form: cheaper with more features than members
        K = X @ X.T + alpha * np.eye(X.shape[0])
        b = y.mean()
        a = np.linalg.solve(K, y - b)
        return lambda Z: Z @ (X.T @ a) + b
    w = np.linalg.solve(Xa.T @ Xa + reg, Xa.T @ y)
    return lambda Z: np.hstack([Z, np.ones((Z.shape[0], 1))]) @ w


def ridge_cv(X, y, seed):
    alphas = [1e-2, 1e-1, 1, 10, 100, 1e3, 1e4]
    folds = np.array_split(np.random.default_rng(seed).permutation(len(y)), 5)
    best = None
    for al in alphas:
        err = 0.0
        for f in folds:
            m = np.ones(len(y), bool)
            m[f] = False
            err += float(((ridge_fit(X[m], y[m], al)(X[f]) - y[f]) ** 2).sum())
        if best is None or err < best[0]:
            best = (err, al)
    return ridge_fit(X, y, best[1])


def logreg(X, y, k, Xt, lam=1e-2, iters=500):
    """Multinomial logistic regression, L2, full-batch gradient descent with Nesterov momentum."""
    n, d = X.shape
    W = np.zeros((d + 1, k))
    V = np.zeros_like(W)
    Xa = np.hstack([X, np.ones((n, 1))])
    Y = np.eye(k)[y]
    lr = 1.0 / (0.25 * np.linalg.norm(Xa, 2) ** 2 / n + lam)
    for _ in range(iters):
        Wl = W + 0.9 * V
        z = Xa @ Wl
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        g = Xa.T @ (p - Y) / n + lam * np.vstack([Wl[:-1], np.zeros((1, k))])
        V = 0.9 * V - lr * g
        W = W + V
    return (np.hstack([Xt, np.ones((Xt.shape[0], 1))]) @ W).argmax(1)


def knn(X, y, Xt, k):
    d = ((Xt[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    nn = np.argsort(d, axis=1, kind="stable")[:, :k]
    votes = y[nn]
    return np.array([np.bincount(v, minlength=y.max() + 1).argmax() for v in votes])


def evaluate(F, acc, task, repeats=5):
    """Mean and std over seeded 70/30 member splits."""
    tasks = sorted(set(task))
    t = np.array([tasks.index(s) for s in task])
    out = {k: [] for k in ("r2", "tau", "logreg", "knn1", "knn5", "majority")}
    for s in range(repeats):
        perm = np.random.default_rng(s).permutation(len(acc))
        cut = int(round(0.7 * len(acc)))
        tr, te = perm[:cut], perm[cut:]
        Xtr, Xte = standardize(F[tr], F[te])
        pred = ridge_cv(Xtr, acc[tr], s)(Xte)
        ss = float(((acc[te] - acc[te].mean()) ** 2).sum())
        out["r2"].append(1 - float(((pred - acc[te]) ** 2).sum()) / ss if ss > 0 else 0.0)
        out["tau"].append(kendall_tau(pred, acc[te]))
        out["logreg"].append(float((logreg(Xtr, t[tr], len(tasks), Xte) == t[te]).mean()))
        out["knn1"].append(float((knn(Xtr, t[tr], Xte, 1) == t[te]).mean()))
        out["knn5"].append(float((knn(Xtr, t[tr], Xte, 5) == t[te]).mean()))
        out["majority"].append(float((t[te] == np.bincount(t[tr]).argmax()).mean()))
    return {k: (float(np.mean(v)), float(np.std(v))) for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("zoos", nargs="+", type=Path, help="zoo directories (tools/build_zoo.py)")
    ap.add_argument("--probes", type=int, default=128, help="probes per member (default 128)")
    ap.add_argument("--seed", type=int, default=0, help="probe seed (default 0)")
    ap.add_argument("--repeats", type=int, default=5, help="seeded member splits (default 5)")
    ap.add_argument("--ray", action="store_true", help="fingerprint members as Ray tasks")
    ap.add_argument("--json", type=Path, default=None, help="also write the table here")
    a = ap.parse_args(argv)
    report = {}
    for z in a.zoos:
        man = read_json(z / "zoo.json", "a zoo manifest (zoo.json)")
        files = [str(z / m["file"]) for m in man["members"]]
        acc = np.array([m["test_accuracy"] for m in man["members"]])
        task = [m["task"] for m in man["members"]]
        data = sorted({str(z / m["data"]) for m in man["members"]})
        kinds = ["functional", "mechanistic"]
        if fp.signature(fp.load_onnx(files[0]))["dtype"].startswith("int"):
            kinds.insert(1, "interactive")
        rows = {}
        for kind in kinds:
            t0 = time.perf_counter()
            pd = data if kind != "mechanistic" else None
            res = fp.fingerprint_rows(files, kind, probes=a.probes, seed=a.seed, probe_data=pd, ray=a.ray,
                                      progress=True)
            secs = time.perf_counter() - t0
            rows[kind] = evaluate(res["fingerprints"].astype(np.float64), acc, task, a.repeats)
            rows[kind]["width"] = int(res["fingerprints"].shape[1])
            rows[kind]["seconds"] = round(secs, 1)
        ntask = len(set(task))
        print(f"\n{man['zoo']} zoo: {len(files)} members, {ntask} tasks, test accuracy "
              f"{acc.mean():.3f} ± {acc.std():.3f}; held-out 30 % x {a.repeats} splits")
        print(f"{'representation':<14} {'width':>6} {'acc R2':>14} {'acc tau':>14} {'task logreg':>14} "
              f"{'task 1-NN':>14} {'task 5-NN':>14} {'majority':>9}")
        for kind, r in rows.items():
            mean_sd = {k: f"{r[k][0]:.3f} ± {r[k][1]:.3f}" for k in ("r2", "tau", "logreg", "knn1", "knn5")}
            print(f"{kind:<14} {r['width']:>6} {mean_sd['r2']:>14} {mean_sd['tau']:>14} {mean_sd['logreg']:>14} "
                  f"{mean_sd['knn1']:>14} {mean_sd['knn5']:>14} {r['majority'][0]:>9.3f}")
        best_task = {k: max(r["logreg"][0], r["knn1"][0], r["knn5"][0]) for k, r in rows.items()}
        fn = max(v for k, v in best_task.items() if k != "mechanistic")
        holds = fn > best_task["mechanistic"]
        print("exact task, best learner: " + ", ".join(f"{k} {v:.3f}" for k, v in best_task.items()) +
              f" -> the paper's finding (functional wins on the exact task) {'holds' if holds else 'does not hold'}")
        report[man["zoo"]] = {"members": len(files), "tasks": ntask, "rows": rows, "functional_wins_task": holds}
    if a.json:
        a.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
