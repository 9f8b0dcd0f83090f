#!/usr/bin/env python3
"""One workload through ChromaDB's own Python client, against a real ChromaDB server
(`chroma run`) and against Glimpse (`glimpse serve`, its Chroma-compatible API), side by
side in one run.

For each server, on the same vectors and queries (numpy CLIP-like recipe of
``chroma_compare.generate_numpy``: Zipf-sized clusters, queries shifted off the data's
cone as text queries are):

* add: ``collection.add(ids, embeddings, metadatas=[{"image_path": ...}])`` in batches of
  ``--batch`` (the original pipeline's call), cosine space; records per second until the
  last add returned;
* query: ``collection.query(query_embeddings=[q], n_results=10,
  include=["metadatas", "distances"])`` one query per call: p50 / p99 latency and recall@10
  against exact cosine search, right after the adds (Chroma indexes inside ``add``; Glimpse
  flushes, indexes and merges in the background, so these queries share the CPU with that
  work); for Glimpse again once that work has settled (every segment indexed and the segment
  list unchanged for 5 s, from ``/v1/collections``);
* throughput with ``--clients`` threads, each with its own ``HttpClient``;
* memory: peak and final resident set of the server process tree (``VmHWM``/``VmRSS``).

Usage: chroma_client_bench.py --glimpse-bin PATH [--n 100000] [--dim 512]
    [--queries 500] [--batch 4096] [--clients 8] [--out bench-out/chroma-client]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import chromadb
import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chroma_compare import exact_topk, generate_numpy, pct, recall  # noqa: E402

K = 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_pids(pid):
    """A process and its descendants (Linux /proc)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for k in kids:
            out += tree_pids(int(k))
    return out


def tree_memory(pid):
    """(current RSS, peak RSS) of a process and its children, in bytes."""
    rss = peak = 0
    for p in tree_pids(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak += int(line.split()[1]) * 1024
    return rss, peak


class Server:
    """A server child process on a free loopback port."""

    def __init__(self, name, cmd, port, log):
        self.name, self.port = name, port
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                r = requests.get(f"http://127.0.0.1:{self.port}/api/v2/heartbeat", timeout=1)
                if r.ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer in {timeout} s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(system, args, work):
    port = free_port()
    data = work / f"{system}-data"
    log = open(work / f"{system}.log", "wb")
    if system == "chroma":
        exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
        cmd = [exe, "run", "--path", str(data), "--host", "127.0.0.1", "--port", str(port)]
    else:
        cmd = [args.glimpse_bin, "serve", "--data-dir", str(data), "--bind",
               f"127.0.0.1:{port}", "--model", "none"]
    s = Server(system, cmd, port, log)
    s.wait_ready()
    return s


def query_all(col, queries, include):
    found, lat = [], []
    for q in queries:
        t = time.perf_counter()
        r = col.query(query_embeddings=[q.tolist()], n_results=K, include=include)
        lat.append(time.perf_counter() - t)
        found.append([int(i) for i in r["ids"][0]])
    return found, lat


def throughput(port, name, queries, clients, seconds=10.0):
    done = [0] * clients
    stop = time.perf_counter() + seconds

    def worker(i):
        c = chromadb.HttpClient(host="127.0.0.1", port=port)
        col = c.get_collection(name)
        j = i
        while time.perf_counter() < stop:
            col.query(query_embeddings=[queries[j % len(queries)].tolist()], n_results=K,
                      include=["metadatas", "distances"])
            done[i] += 1
            j += clients

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sum(done) / (time.perf_counter() - t)


def glimpse_wait_settled(port, name, timeout=1800, quiet=5.0):
    """Seconds until Glimpse's background work after the adds is done: every segment indexed
    and the segment list unchanged for `quiet` seconds (flushes and merges finished)."""
    t = time.perf_counter()
    last, since = None, time.perf_counter()
    while time.perf_counter() - t < timeout:
        info = requests.get(f"http://127.0.0.1:{port}/v1/collections/{name}", timeout=10).json()
        # Rows still in the memtable are scanned exactly by design (it flushes at 10k rows).
        state = (info.get("segments"), info.get("indexed_segments"), info.get("unindexed_rows"))
        if state != last:
            last, since = state, time.perf_counter()
        elif info.get("unindexed_rows", 1) == 0 and time.perf_counter() - since >= quiet:
            return since - t, info
        time.sleep(0.25)
    raise RuntimeError("glimpse did not settle")


def run(system, args, work, base, queries, gt):
    server = start(system, args, work)
    out = {"system": system}
    try:
        client = chromadb.HttpClient(host="127.0.0.1", port=server.port)
        name = "bench"
        col = client.create_collection(name, metadata={"hnsw:space": "cosine"})
        batch = min(args.batch, client.get_max_batch_size())
        out["batch"] = batch
        t = time.perf_counter()
        for s in range(0, len(base), batch):
            e = min(len(base), s + batch)
            col.add(ids=[str(i) for i in range(s, e)], embeddings=base[s:e],
                    metadatas=[{"image_path": f"images/{i}.jpg"} for i in range(s, e)])
        add_s = time.perf_counter() - t
        out["add_s"] = add_s
        out["add_per_s"] = len(base) / add_s
        assert col.count() == len(base), col.count()
        include = ["metadatas", "distances"]
        query_all(col, queries[:20], include)  # warm-up
        found, lat = query_all(col, queries, include)
        out["recall"] = recall(found, gt)
        out["p50_ms"], out["p99_ms"] = pct(lat, 0.5), pct(lat, 0.99)
        if system == "glimpse":
            waited, info = glimpse_wait_settled(server.port, name)
            out["index_wait_s"] = waited
            out["segments"] = info.get("segments")
            found, lat = query_all(col, queries, include)
            out["indexed_recall"] = recall(found, gt)
            out["indexed_p50_ms"], out["indexed_p99_ms"] = pct(lat, 0.5), pct(lat, 0.99)
        out["qps"] = throughput(server.port, name, queries, args.clients)
        rss, peak = tree_memory(server.proc.pid)
        out["rss_bytes"], out["peak_rss_bytes"] = rss, peak
    finally:
        server.stop()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--glimpse-bin", required=True)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--systems", default="chroma,glimpse")
    ap.add_argument("--out", default="bench-out/chroma-client")
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    base, queries = generate_numpy(args.n, args.queries, args.dim, seed=2024)
    gt = exact_topk(base, queries)
    results = {}
    with tempfile.TemporaryDirectory(prefix="chroma-client-bench-") as tmp:
        work = Path(tmp)
        for system in args.systems.split(","):
            print(f"running {system} ...", file=sys.stderr, flush=True)
            results[system] = run(system, args, work, base, queries, gt)
            print(json.dumps(results[system]), file=sys.stderr, flush=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    c, g = results.get("chroma"), results.get("glimpse")
    if not (c and g):
        return
    mb = lambda b: f"{b / 2**20:,.0f} MiB ({b / args.n:,.0f} B/vector)"  # noqa: E731
    rows = [
        ("add (records/s)", f"{c['add_per_s']:,.0f}", f"{g['add_per_s']:,.0f}",
         g["add_per_s"] / c["add_per_s"]),
        ("query p50 (ms)", f"{c['p50_ms']:.2f}", f"{g['p50_ms']:.2f}", c["p50_ms"] / g["p50_ms"]),
        ("query p99 (ms)", f"{c['p99_ms']:.2f}", f"{g['p99_ms']:.2f}", c["p99_ms"] / g["p99_ms"]),
        ("recall@10", f"{c['recall']:.3f}", f"{g['recall']:.3f}", None),
        ("p50 / p99 once background work settled (ms)", "", f"{g['indexed_p50_ms']:.2f} / "
         f"{g['indexed_p99_ms']:.2f} (recall {g['indexed_recall']:.3f}; settled "
         f"{g['index_wait_s']:.1f} s after the last add, {g['segments']} segments)",
         c["p99_ms"] / g["indexed_p99_ms"]),
        (f"queries/s, {args.clients} clients", f"{c['qps']:,.0f}", f"{g['qps']:,.0f}",
         g["qps"] / c["qps"]),
        ("server RSS at the end", mb(c["rss_bytes"]), mb(g["rss_bytes"]),
         c["rss_bytes"] / max(g["rss_bytes"], 1)),
        ("server peak RSS", mb(c["peak_rss_bytes"]), mb(g["peak_rss_bytes"]),
         c["peak_rss_bytes"] / max(g["peak_rss_bytes"], 1)),
    ]
    print(f"\nN = {args.n:,}, d = {args.dim}, {args.queries} queries, k = {K}, "
          f"batch {c['batch']} / {g['batch']}, chromadb {chromadb.__version__}\n")
    print("| metric | ChromaDB | Glimpse | Glimpse better by |")
    print("| --- | --- | --- | --- |")
    for name, cv, gv, r in rows:
        print(f"| {name} | {cv} | {gv} | {'' if r is None else f'{r:.1f}x'} |")


if __name__ == "__main__":
    main()
