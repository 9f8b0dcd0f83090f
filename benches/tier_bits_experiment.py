#!/usr/bin/env python3
"""How many raw rows a compact re-rank tier of b bits per dimension would still read, by bound.

A design experiment for issue 17's memory goal (the tier resident in <= 25 % of the f32 rows),
not a benchmark of built code. It reads the `base.npy` / `queries.npy` that
`index_bench --out DIR` writes, takes each query's true top `--candidates` rows as a stand-in for
the PQ candidates a search re-ranks, quantises the rows per dimension (min/step over all rows,
as `Sq8Codes` does) with and without a random rotation, and counts the candidates each bound
cannot rule out:

- `det`: the tier's bound today, |exact - approx| <= 1/2 sum_j |q_j| step_j (always holds);
- `prob`: z standard deviations of the rounding error's effect, z * sqrt(sum_j (q_j step_j)^2 / 12),
  which holds with high probability once a random rotation spreads each row's rounding errors
  over the dimensions (the argument of RaBitQ's error bounds).

It also prints the largest error seen in units of each bound's scale (for `prob`, one standard
deviation) and how many true top-k rows a bound would have wrongly ruled out.

    index_bench --n 100000 --data hard --queries 200 --query-shift 0.6 --settings 64:80 --out DIR
    python benches/tier_bits_experiment.py DIR [--candidates 800] [--k 10] [--z 6]
"""

import argparse

import numpy as np


def quantise(rows: np.ndarray, bits: int):
    lo, hi = rows.min(0), rows.max(0)
    levels = (1 << bits) - 1
    step = np.maximum((hi - lo) / levels, np.finfo(np.float32).tiny)
    codes = np.clip(np.round((rows - lo) / step), 0, levels)
    return lo + codes * step, step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--candidates", type=int, default=800)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--z", type=float, default=6.0)
    args = ap.parse_args()

    x = np.load(f"{args.dir}/base.npy").astype(np.float32)
    q = np.load(f"{args.dir}/queries.npy").astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    dim = x.shape[1]
    cand = np.argsort(-(q @ x.T), axis=1)[:, : args.candidates]
    rot, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((dim, dim)))
    rot = rot.astype(np.float32)
    spaces = {False: (x, q), True: (x @ rot, q @ rot)}

    print(f"{len(q)} queries, {len(x)} rows x {dim}, {args.candidates} candidates, k {args.k}")
    print("bits rotated bound  bytes  survivors(mean p99)  missed-top-k  max-error/scale")
    for bits, rotated, bound in [
        (8, False, "det"),
        (8, True, "prob"),
        (7, True, "prob"),
        (6, False, "det"),
        (6, True, "prob"),
        (5, True, "prob"),
    ]:
        rows, queries = spaces[rotated]
        approx_rows, step = quantise(rows, bits)
        survivors, missed, worst = [], 0, 0.0
        for i in range(len(queries)):
            qi, ci = queries[i], cand[i]
            approx, exact = approx_rows[ci] @ qi, rows[ci] @ qi
            if bound == "det":
                scale = 0.5 * np.abs(qi) @ step
                b = scale
            else:
                scale = np.sqrt(((qi * step) ** 2).sum() / 12.0)
                b = args.z * scale
            worst = max(worst, float((np.abs(approx - exact) / scale).max()))
            kth = np.sort(approx)[-args.k]
            keep = approx >= kth - 2 * b
            survivors.append(int(keep.sum()))
            missed += int((~keep[np.argsort(-exact)[: args.k]]).sum())
        print(
            f"{bits:4d} {str(rotated):7s} {bound:5s} {dim * bits // 8:6d}  "
            f"{np.mean(survivors):8.1f} {np.percentile(survivors, 99):6.0f}  "
            f"{missed:12d}  {worst:8.2f}"
        )


if __name__ == "__main__":
    main()
