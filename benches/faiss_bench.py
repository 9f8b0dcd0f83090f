#!/usr/bin/env python3
"""faiss on the same data and queries as `index_bench`, side by side with
Glimpse's results.

Reads DIR/base.npy, DIR/queries.npy and DIR/glimpse_results.json (written by
`index_bench --out DIR`), builds faiss IVF-PQ (8-bit) + IndexRefineFlat,
IVF-PQ 4-bit fast scan + IndexRefineFlat and HNSW32 with the same nlist,
times train+add (all cores, faiss default) and searches single-threaded
(omp_set_num_threads(1)), then prints one table with ratios.

IVF-RaBitQ and IVF-RaBitQfs (fast scan) + Refine(Flat) are searched on the same grid.

Usage: faiss_bench.py DIR [--skip-hnsw] [--skip-pq8] [--skip-fastscan] [--skip-rabitq]
    [--nprobes 8,16,32,64] [--k-factors 5,10,20]   (the IVF grid searched)
    [--efs 16,32,64,128,256]                       (HNSW32's efSearch values)
"""

import json
import sys
import time

import faiss
import numpy as np

K = 10


def recall_at_k(ids, gt):
    hits = 0
    for row, truth in zip(ids, gt):
        hits += len(set(row[:K].tolist()) & set(truth[:K].tolist()))
    return hits / (len(gt) * K)


def timed_search(index, q, params_fn, k):
    """Recall + single-thread QPS by wall and by thread CPU time (batch of all queries, as faiss is usually
    driven) + p50/p99 per-query latency (one query per call)."""
    params_fn()
    faiss.omp_set_num_threads(1)
    index.search(q[:50], k)  # warm-up
    t = time.perf_counter()
    c = time.thread_time()
    _, ids = index.search(q, k)
    qps = len(q) / (time.perf_counter() - t)
    cpu_qps = len(q) / max(time.thread_time() - c, 1e-9)
    lat = []
    for i in range(len(q)):
        s = time.perf_counter()
        index.search(q[i : i + 1], k)
        lat.append((time.perf_counter() - s) * 1e6)
    lat.sort()
    p50 = lat[len(lat) // 2]
    p99 = lat[min(len(lat) - 1, int(round((len(lat) - 1) * 0.99)))]
    return ids, qps, cpu_qps, p50, p99


def main():
    d = sys.argv[1]
    skip_hnsw = "--skip-hnsw" in sys.argv
    skip_pq8 = "--skip-pq8" in sys.argv
    skip_fastscan = "--skip-fastscan" in sys.argv
    skip_rabitq = "--skip-rabitq" in sys.argv
    nprobes, kfs, efs = [8, 16, 32, 64], [5, 10, 20], [16, 32, 64, 128, 256]
    for i, a in enumerate(sys.argv):
        if a == "--nprobes" and i + 1 < len(sys.argv):
            nprobes = [int(x) for x in sys.argv[i + 1].split(",")]
        if a == "--k-factors" and i + 1 < len(sys.argv):
            kfs = [int(x) for x in sys.argv[i + 1].split(",")]
        if a == "--efs" and i + 1 < len(sys.argv):
            efs = [int(x) for x in sys.argv[i + 1].split(",")]
    xb = np.load(f"{d}/base.npy")
    xq = np.load(f"{d}/queries.npy")
    ours = json.load(open(f"{d}/glimpse_results.json"))
    n, dim = xb.shape
    nlist = ours["nlist"]
    ncores = faiss.omp_get_max_threads()
    print(f"# faiss {faiss.__version__}: N={n} d={dim} queries={len(xq)} nlist={nlist}; "
          f"build on {ncores} threads, search on 1 thread")

    flat = faiss.IndexFlatIP(dim)
    flat.add(xb)
    _, gt = flat.search(xq, K)

    results = []  # (family, config, recall, qps, p50, p99)
    builds = {}

    def build(name, factory):
        faiss.omp_set_num_threads(ncores)
        idx = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        t = time.perf_counter()
        c = time.process_time()
        idx.train(xb)
        idx.add(xb)
        secs = time.perf_counter() - t
        cpu = time.process_time() - c
        nbytes = faiss.serialize_index(idx).size
        builds[name] = (secs, cpu, nbytes / n)
        print(f"built {name} ({factory}) in {secs:.1f}s wall, {cpu:.1f}s CPU, {nbytes / n:.1f} bytes/vector")
        return idx

    m8 = dim // 8
    m4 = dim // 4
    ivf_configs = [
        ("faiss IVF-PQ4fs+refine", f"IVF{nlist},PQ{m4}x4fs,RFlat"),
        ("faiss IVF-PQ8+refine", f"IVF{nlist},PQ{m8},RFlat"),
        # RaBitQ (1-bit codes with error bounds, faiss >= 1.11) and its fast-scan variant.
        ("faiss IVF-RaBitQ+refine", f"IVF{nlist},RaBitQ,Refine(Flat)"),
        ("faiss IVF-RaBitQfs+refine", f"IVF{nlist},RaBitQfs,Refine(Flat)"),
    ]
    if skip_pq8:
        ivf_configs = [c for c in ivf_configs if "PQ8" not in c[0]]
    if skip_rabitq:
        ivf_configs = [c for c in ivf_configs if "RaBitQ" not in c[0]]
    if skip_fastscan:
        ivf_configs = [c for c in ivf_configs if "fs" not in c[1]]
    for name, factory in ivf_configs:
        idx = build(name, factory)
        ivf = faiss.extract_index_ivf(idx)
        for nprobe in nprobes:
            if nprobe > nlist:
                continue
            for kf in kfs:
                def setp(nprobe=nprobe, kf=kf):
                    ivf.nprobe = nprobe
                    idx.k_factor = kf
                ids, qps, cpu, p50, p99 = timed_search(idx, xq, setp, K)
                r = recall_at_k(ids, gt)
                results.append((name, f"nprobe={nprobe} kf={kf}", r, qps, cpu, p50, p99))
                print(f"  {name:<24} nprobe={nprobe:<4} k_factor={kf:<3} "
                      f"recall={r:.4f} QPS={qps:8.1f} cpuQPS={cpu:8.1f} p50={p50:6.0f}us p99={p99:6.0f}us")
        del idx

    if not skip_hnsw:
        idx = build("faiss HNSW32", "HNSW32,Flat")
        for ef in efs:
            def setp(ef=ef):
                idx.hnsw.efSearch = ef
            ids, qps, cpu, p50, p99 = timed_search(idx, xq, setp, K)
            r = recall_at_k(ids, gt)
            results.append(("faiss HNSW32", f"efSearch={ef}", r, qps, cpu, p50, p99))
            print(f"  faiss HNSW32 efSearch={ef:<4} recall={r:.4f} QPS={qps:8.1f} cpuQPS={cpu:8.1f} "
                  f"p50={p50:6.0f}us p99={p99:6.0f}us")

    for c in ours["configs"]:
        results.append(("glimpse IVF-PQ", c["config"], c["recall"], c["qps"], c.get("cpu_qps", c["qps"]), c["p50_us"], c["p99_us"]))

    print()
    print(f"{'index':<24} {'config':<24} {'recall@10':>9} {'QPS wall':>10} {'QPS cpu':>10} {'p50 us':>8} {'p99 us':>8}")
    for fam, cfg, r, qps, cpu, p50, p99 in results:
        print(f"{fam:<24} {cfg:<24} {r:>9.4f} {qps:>10.1f} {cpu:>10.1f} {p50:>8.0f} {p99:>8.0f}")

    # Ranked by QPS over thread CPU time: robust to other load on the box.
    def best(pred):
        ok = [x for x in results if pred(x[0]) and x[2] >= 0.95]
        return max(ok, key=lambda x: x[4]) if ok else None

    print()
    print("## Goals (recall@10 >= 0.95, single-thread search)")
    ob = best(lambda f: f.startswith("glimpse"))
    fb = best(lambda f: f.startswith("faiss"))
    if ob and fb:
        print(f"best glimpse: {ob[1]} recall={ob[2]:.4f} QPS cpu={ob[4]:.1f} wall={ob[3]:.1f}")
        print(f"best faiss:   {fb[0]} {fb[1]} recall={fb[2]:.4f} QPS cpu={fb[4]:.1f} wall={fb[3]:.1f}")
        print(f"QPS ratio glimpse/faiss-best = {ob[4] / fb[4]:.2f}x by CPU time, "
              f"{ob[3] / fb[3]:.2f}x by wall time (goal >= 1.5x)")
        # faiss's QPS above is for one batch of all queries (its coarse step becomes one GEMM);
        # a server answers one query per call, which is how every Glimpse figure is taken.
        def fastest(pred):
            ok = [x for x in results if pred(x[0]) and x[2] >= 0.95]
            return min(ok, key=lambda x: x[5]) if ok else None
        o1, f1 = fastest(lambda f: f.startswith("glimpse")), fastest(lambda f: f.startswith("faiss"))
        print(f"one query per call, p50 latency at recall >= 0.95: glimpse {o1[1]} {o1[5]:.0f} us, "
              f"{f1[0]} {f1[1]} {f1[5]:.0f} us -> {f1[5] / o1[5]:.2f}x")
    else:
        print("one side never reached recall 0.95:", ob, fb)
    for fam in ["faiss IVF-PQ8+refine", "faiss IVF-PQ4fs+refine", "faiss IVF-RaBitQ+refine",
                "faiss IVF-RaBitQfs+refine", "faiss HNSW32"]:
        b = best(lambda f, fam=fam: f == fam)
        if b:
            print(f"  vs {fam:<24} best cpu QPS@0.95 {b[4]:8.1f} -> ratio {ob[4] / b[4] if ob else float('nan'):.2f}x")
    ours_build = ours["build_s"]
    ours_cpu = ours.get("build_cpu_s", float("nan"))
    for name, (secs, cpu, bpv) in builds.items():
        extra = bpv - dim * 4 if "refine" in name or "HNSW" in name else bpv
        print(f"build {name:<24} {secs:7.1f}s wall {cpu:7.1f}s CPU (glimpse {ours_build:.1f}s wall = "
              f"{ours_build / secs:.2f}x, {ours_cpu:.1f}s CPU = {ours_cpu / cpu:.2f}x); "
              f"{extra:.1f} bytes/vector beside raw vectors")
    print(f"glimpse index: {ours['bytes_per_vector']:.1f} bytes/vector beside raw vectors (goal <= 100)")


if __name__ == "__main__":
    main()
