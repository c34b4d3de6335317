"""NCC and NC1-NC4: grokprobe's vectorised float64 metrics against per-sample Python loops (the way
the authors' code computes NCC), at C = 97, N = 4704, d = 128; values must agree."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, parser, report  # noqa: E402

from grokprobe import metrics as M  # noqa: E402


def loop_ncc(phi: list[list[float]], y: list[int]) -> float:
    classes = sorted(set(y))
    means, var = {}, {}
    for c in classes:
        rows = [phi[i] for i in range(len(y)) if y[i] == c]
        mu = [sum(r[j] for r in rows) / len(rows) for j in range(len(rows[0]))]
        means[c] = mu
        var[c] = sum(sum((r[j] - mu[j]) ** 2 for j in range(len(mu))) for r in rows) / len(rows)
    total, pairs = 0.0, 0
    for c in classes:
        for c2 in classes:
            if c != c2:
                dist = sum((a - b) ** 2 for a, b in zip(means[c], means[c2]))
                total += (var[c] + var[c2]) / (2 * dist)
                pairs += 1
    return total / pairs


def loop_nc4(phi, y, logits) -> float:
    classes = sorted(set(y))
    means = {
        c: [sum(phi[i][j] for i in range(len(y)) if y[i] == c) / y.count(c) for j in range(len(phi[0]))]
        for c in classes
    }
    wrong = 0
    for i in range(len(y)):
        nearest = min(classes, key=lambda c: sum((a - b) ** 2 for a, b in zip(phi[i], means[c])))
        top = max(classes, key=lambda c: logits[i][c])
        wrong += nearest != top
    return wrong / len(y)


def main() -> None:
    args = parser(__doc__).parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    C, N, d = (10, 200, 16) if args.quick else (97, 4704, 128)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(N) % C
    phi = torch.randn(C, d, generator=g)[y] + 0.5 * torch.randn(N, d, generator=g)
    W = torch.randn(C, d, generator=g)
    logits = phi @ W.T
    phi_l, y_l, logits_l = phi.double().tolist(), y.tolist(), logits.double().tolist()

    got = {}

    def vectorised():
        got["ncc"] = float(M.ncc(phi, y))
        got["nc4"] = float(M.nc4(phi, y, logits))
        M.nc1(phi, y), M.nc2(phi, y), M.nc3(phi, y, W)

    def loops():
        got["loop_ncc"] = loop_ncc(phi_l, y_l)
        got["loop_nc4"] = loop_nc4(phi_l, y_l, logits_l)

    reps = 20 if args.quick else 50  # vectorised calls per round, so the timer sees more than noise
    totals = interleaved(
        {f"vectorised (x{reps})": lambda: [vectorised() for _ in range(reps)], "python loops": loops},
        max(1, args.rounds if not args.quick else 1),
    )
    assert math.isclose(got["ncc"], got["loop_ncc"], rel_tol=1e-9), (got["ncc"], got["loop_ncc"])
    assert math.isclose(got["nc4"], got["loop_nc4"], abs_tol=1e-12), (got["nc4"], got["loop_nc4"])
    print(
        f"values agree: NCC {got['ncc']:.10g} (vectorised) vs {got['loop_ncc']:.10g} (loops); "
        f"NC4 {got['nc4']:.4g} vs {got['loop_nc4']:.4g}"
    )
    names = list(totals)
    report(
        f"metrics at C={C}, N={N}, d={d} (vectorised also computes NC1-NC3)",
        totals,
        {names[0]: reps, names[1]: 1},
        "evals/s",
        names[0],
        names[1],
    )


if __name__ == "__main__":
    main()
