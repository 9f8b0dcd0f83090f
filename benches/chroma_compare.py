#!/usr/bin/env python3
"""Glimpse vs ChromaDB, side by side on the same synthetic CLIP-like data.

One run measures, for each system, on the same vectors and queries:

* load: time until all N vectors are durable and searchable
  (chromadb: ``PersistentClient`` + ``collection.add`` in batches of 5000,
  cosine space, its documented path; Glimpse: HTTP bulk-load of the Parquet
  shards, one request per shard, plus optionally one JSON ``paths`` request
  with ``--import-root`` into a second, throw-away data dir);
* single-query latency p50/p99 over ``--queries`` queries at k=10
  (Glimpse over HTTP with a keep-alive ``requests.Session``; chromadb through
  its in-process client ``collection.query``);
* recall@10 against exact cosine search (numpy brute force on the
  normalised vectors), for Glimpse also at several ``nprobe:refine`` settings
  and for chromadb at its default ``ef_search`` and a larger one;
* resident memory (Glimpse: RSS of the server process after load + queries;
  chromadb: RSS growth of this Python process, since ``PersistentClient``
  runs in-process) and disk bytes per vector (``du`` of the data dirs);
* reopen: time from a cold start to the first answered query
  (Glimpse: SIGKILL the server, spawn it again, wait for its ``listening``
  line, search; chromadb: a fresh Python process opening ``PersistentClient``
  on the same path, timed after ``import chromadb``, import time reported
  separately);
* concurrent search throughput with 1/8/32 clients, with and without a
  bulk-load running (Glimpse via the Rust ``loadgen`` binary; chromadb via
  Python threads calling ``collection.query``, reported for reference).

Data: ``--from-npy DIR`` reads ``DIR/base.npy`` and ``DIR/queries.npy``
(as written by ``synth_dump``/``index_bench --out``, i.e. Glimpse's Rust
generator ``glimpse_index::synthetic``); otherwise the same recipe is
generated here with numpy (fixed seed; same distribution, not the same
numbers as the Rust generator). Vectors are written once as Parquet shards
in Glimpse's schema (``id`` int64, ``image_path`` string, ``embedding``
fixed_size_list<float32>[d]) named
``embeddings_{S}_{E}.parquet_part_0/data.parquet`` and reused by later runs.

Results: a table with ratios on stdout and ``OUT/results.json``
(plus ``OUT/chroma.json`` / ``OUT/glimpse.json`` per system, so a later
``--systems glimpse`` run can print the table against an earlier chroma run;
the table says so when it does).

Usage: chroma_compare.py [--n 200000] [--dim 512] [--queries 1000]
  [--systems chroma,glimpse] [--glimpse-bin PATH] [--loadgen-bin PATH]
  [--from-npy DIR] [--out bench-out/chroma-N] [--settings 8:10,16:10,32:40]
"""

import argparse
import gc
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

K = 10
GOALS = {
    "load_speedup_min": 20.0,
    "memory_per_vector_ratio_max": 1 / 20,
    "reopen_s_max": 0.5,
}


# ---------------------------------------------------------------- data


def _normalize(x):
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    n[n == 0] = 1.0
    return x / n


def generate_numpy(n, n_queries, dim, seed, query_shift=0.6, chunk=50_000):
    """The recipe of ``glimpse_index::synthetic`` in numpy: Zipf-sized clusters
    on the unit sphere around a common mean, power-law per-dimension spread
    (shuffled), queries shifted by one common offset (modality gap)."""
    rng = np.random.default_rng(seed)
    n_clusters = max(8, n // 500)
    scale = (1.0 + np.arange(dim, dtype=np.float64)) ** -0.5
    rng.shuffle(scale)
    scale /= np.linalg.norm(scale)
    mean = _normalize(rng.standard_normal(dim))
    shift = _normalize(rng.standard_normal(dim)) * query_shift
    centres = _normalize(0.7 * mean + rng.standard_normal((n_clusters, dim)) * scale)
    spreads = rng.uniform(0.55, 1.0, n_clusters)
    w = 1.0 / (1.0 + np.arange(n_clusters)) ** 0.8
    w /= w.sum()

    def points(count, r):
        c = r.choice(n_clusters, size=count, p=w)
        out = np.empty((count, dim), dtype=np.float32)
        for s in range(0, count, chunk):
            e = min(count, s + chunk)
            noise = r.standard_normal((e - s, dim)) * scale
            out[s:e] = _normalize(centres[c[s:e]] + spreads[c[s:e], None] * noise)
        return out

    base = points(n, np.random.default_rng([seed, 4]))
    q = points(n_queries, np.random.default_rng([seed, 5]))
    q = _normalize(q + shift).astype(np.float32)
    return base, q


def shard_dir(out, n):
    return out / "data" / f"shards-{n}"


def write_shards(base, root, shard_rows):
    """Writes Glimpse-schema Parquet shards; returns their paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, dim = base.shape
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(0, n, shard_rows):
        e = min(n, s + shard_rows)
        d = root / f"embeddings_{s}_{e}.parquet_part_0"
        d.mkdir(exist_ok=True)
        p = d / "data.parquet"
        paths.append(p)
        if p.exists():
            continue
        flat = pa.array(np.ascontiguousarray(base[s:e]).reshape(-1), type=pa.float32())
        table = pa.table(
            {
                "id": pa.array(np.arange(s, e, dtype=np.int64)),
                "image_path": pa.array([f"{i // 1000:04d}/{i}.jpg" for i in range(s, e)]),
                "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
            }
        )
        tmp = d / "data.parquet.tmp"
        pq.write_table(table, tmp, compression="none")
        tmp.rename(p)
    return paths


def load_data(args, out):
    """Returns (base, queries, provenance) and makes sure shards + queries.npy exist."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    stamp = data / f"source-{args.n}.json"
    if args.from_npy:
        base = np.load(Path(args.from_npy) / "base.npy", mmap_mode="r")
        queries = np.load(Path(args.from_npy) / "queries.npy")
        if base.shape[0] < args.n or queries.shape[0] < args.queries:
            sys.exit(f"{args.from_npy}: has {base.shape[0]} vectors / {queries.shape[0]} queries, "
                     f"need {args.n} / {args.queries}")
        base = np.ascontiguousarray(base[: args.n], dtype=np.float32)
        queries = np.ascontiguousarray(queries[: args.queries], dtype=np.float32)
        source = {"generator": "rust glimpse_index::synthetic (synth_dump)"}
    else:
        t = time.perf_counter()
        base, queries = generate_numpy(args.n, args.queries, args.dim, args.seed)
        source = {"generator": "numpy (same recipe as glimpse_index::synthetic)", "seed": args.seed}
        print(f"# generated {args.n} x {args.dim} in {time.perf_counter() - t:.1f} s", flush=True)
    h = hashlib.sha256(np.ascontiguousarray(base[: min(len(base), 1000)]).tobytes())
    h.update(np.ascontiguousarray(base[-1]).tobytes())
    h.update(queries.tobytes())
    source.update(n=int(base.shape[0]), dim=int(base.shape[1]), queries=int(queries.shape[0]),
                  shard_rows=args.shard_rows, fingerprint=h.hexdigest()[:16])
    old = json.loads(stamp.read_text()) if stamp.exists() else None
    sd = shard_dir(out, args.n)
    if old != source and sd.exists():
        shutil.rmtree(sd)  # different data: never mix shards of two data sets
    t = time.perf_counter()
    shards = write_shards(base, sd, args.shard_rows)
    stamp.write_text(json.dumps(source))
    np.save(data / "queries.npy", queries)
    print(f"# shards ready in {sd} ({len(shards)} files, {time.perf_counter() - t:.1f} s)", flush=True)
    return base, queries, shards, source


def exact_topk(base, queries, k=K, block=100_000):
    """Exact cosine top-k by blocked matmul on normalised vectors."""
    qn = _normalize(queries.astype(np.float32))
    best_s = np.full((len(qn), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(qn), k), dtype=np.int64)
    for s in range(0, len(base), block):
        b = _normalize(np.asarray(base[s : s + block], dtype=np.float32))
        sc = qn @ b.T
        part = np.argpartition(-sc, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(sc, part, axis=1)
        cs = np.concatenate([best_s, ps], axis=1)
        ci = np.concatenate([best_i, part + s], axis=1)
        top = np.argpartition(-cs, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(cs, top, axis=1)
        best_i = np.take_along_axis(ci, top, axis=1)
    return best_i


def recall(found, gt):
    hits = sum(len(set(f[:K]) & set(g[:K].tolist())) for f, g in zip(found, gt))
    return hits / (len(gt) * K)


def pct(lat_s, p):
    xs = sorted(lat_s)
    return xs[min(len(xs) - 1, int(round((len(xs) - 1) * p)))] * 1000.0


def du_bytes(path, exclude=()):
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d not in exclude]
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def _proc_bytes(path, key):
    """A ``key: N kB`` field of a /proc file, in bytes, or None."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_anon(pid):
    """RssAnon of a process in bytes (RSS minus file-backed/mmap'd pages)."""
    return _proc_bytes(f"/proc/{pid}/status", "RssAnon")


def file_pmd_mapped(pid):
    """Bytes of a process's file mappings held on 2 MiB pages (Linux smaps), or None."""
    return _proc_bytes(f"/proc/{pid}/smaps_rollup", "FilePmdMapped")


# ---------------------------------------------------------------- chromadb


CHROMA_REOPEN = r"""
import sys, time, json
t0 = time.perf_counter()
import chromadb
t1 = time.perf_counter()
client = chromadb.PersistentClient(path=sys.argv[1])
col = client.get_collection(sys.argv[2])
q = [float(x) for x in sys.argv[3].split(",")]
r = col.query(query_embeddings=[q], n_results=10)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "open_first_query_s": t2 - t1, "first_id": r["ids"][0][0]}))
"""


CHROMA_QUERY = r"""
import sys, time, json
import numpy as np
import chromadb
col = chromadb.PersistentClient(path=sys.argv[1]).get_collection(sys.argv[2])
qs = [q.tolist() for q in np.load(sys.argv[3])]
for q in qs[:20]:
    col.query(query_embeddings=[q], n_results=10)
lat, ids = [], []
for q in qs:
    s = time.perf_counter()
    r = col.query(query_embeddings=[q], n_results=10)
    lat.append(time.perf_counter() - s)
    ids.append([int(x) for x in r["ids"][0]])
print(json.dumps({"ef": col.configuration["hnsw"]["ef_search"], "lat": lat, "ids": ids}))
"""


def run_chroma(args, out, base, queries, gt):
    import chromadb
    import psutil

    res = {"system": "chromadb", "version": chromadb.__version__}
    path = out / "chroma-data"
    if path.exists():
        shutil.rmtree(path)
    me = psutil.Process()
    gc.collect()
    rss0 = me.memory_info().rss
    anon0 = rss_anon(os.getpid())

    t = time.perf_counter()
    client = chromadb.PersistentClient(path=str(path))
    col = client.create_collection("bench", metadata={"hnsw:space": "cosine"})
    n = len(base)
    bs = args.chroma_batch
    for s in range(0, n, bs):
        e = min(n, s + bs)
        col.add(ids=[str(i) for i in range(s, e)], embeddings=base[s:e])
        if (s // bs) % 20 == 0:
            el = time.perf_counter() - t
            print(f"#   chroma add {e}/{n} ({e / max(el, 1e-9):.0f} vec/s)", flush=True)
    count = col.count()
    col.query(query_embeddings=[queries[0].tolist()], n_results=K)  # searchable
    res["load_s"] = time.perf_counter() - t
    res["count"] = count
    print(f"# chroma load: {res['load_s']:.1f} s ({n / res['load_s']:.0f} vec/s), count={count}", flush=True)

    def measure(label):
        for q in queries[:20]:
            col.query(query_embeddings=[q.tolist()], n_results=K)
        lat, found = [], []
        for q in queries:
            qs = q.tolist()
            s = time.perf_counter()
            r = col.query(query_embeddings=[qs], n_results=K)
            lat.append(time.perf_counter() - s)
            found.append([int(x) for x in r["ids"][0]])
        row = {"config": label, "recall": recall(found, gt), "p50_ms": pct(lat, 0.5),
               "p99_ms": pct(lat, 0.99), "qps_1client": len(lat) / sum(lat)}
        print(f"# chroma {label}: recall@10={row['recall']:.3f} p50={row['p50_ms']:.2f} ms "
              f"p99={row['p99_ms']:.2f} ms", flush=True)
        return row

    ef0 = col.configuration.get("hnsw", {}).get("ef_search", "?")
    res["search"] = [measure(f"default (ef_search={ef0})")]

    if not args.skip_concurrency:
        res["concurrency"] = chroma_concurrency(col, queries, args)

    gc.collect()
    res["rss_bytes"] = me.memory_info().rss - rss0
    a = rss_anon(os.getpid())
    res["rss_anon_bytes"] = (a - anon0) if a is not None and anon0 is not None else None
    res["disk_bytes"] = du_bytes(path)
    res["bytes_per_vector_rss"] = res["rss_bytes"] / n
    res["bytes_per_vector_disk"] = res["disk_bytes"] / n
    print(f"# chroma memory: +{res['rss_bytes'] / 2**20:.0f} MiB RSS in-process, "
          f"disk {res['disk_bytes'] / 2**20:.0f} MiB", flush=True)
    # Other ef_search values: chromadb 1.x persists `modify(configuration=...)`
    # but an already loaded HNSW index keeps its ef, so each value is measured
    # in a fresh process (as a restarted service would see it).
    for ef in args.chroma_ef:
        try:
            col.modify(configuration={"hnsw": {"ef_search": ef}})
        except Exception as e:  # older/newer clients spell this differently
            print(f"# chroma: cannot set ef_search={ef}: {e}", flush=True)
            continue
        p = subprocess.run([sys.executable, "-c", CHROMA_QUERY, str(path), "bench",
                            str(out / "data" / "queries.npy")],
                           capture_output=True, text=True, check=False)
        if p.returncode != 0:
            print(f"# chroma ef_search={ef} run failed: {p.stderr[-500:]}", flush=True)
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        lat = r["lat"]
        row = {"config": f"ef_search={r['ef']} (fresh process)", "recall": recall(r["ids"], gt),
               "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "qps_1client": len(lat) / sum(lat)}
        print(f"# chroma {row['config']}: recall@10={row['recall']:.3f} p50={row['p50_ms']:.2f} ms "
              f"p99={row['p99_ms']:.2f} ms", flush=True)
        res["search"].append(row)
    if args.chroma_ef and ef0 != "?":
        col.modify(configuration={"hnsw": {"ef_search": ef0}})  # reopen below sees the default

    del col, client
    gc.collect()

    # Reopen in a fresh process: the in-process client caches its system.
    q0 = ",".join(repr(float(x)) for x in queries[0])
    s = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", CHROMA_REOPEN, str(path), "bench", q0],
                       capture_output=True, text=True, check=False)
    wall = time.perf_counter() - s
    if p.returncode == 0:
        r = json.loads(p.stdout.strip().splitlines()[-1])
        res["reopen_s"] = r["open_first_query_s"]
        res["reopen_import_s"] = r["import_s"]
        res["reopen_process_wall_s"] = wall
        print(f"# chroma reopen: {r['open_first_query_s']:.3f} s to first answer "
              f"(+{r['import_s']:.2f} s import chromadb; process wall {wall:.2f} s)", flush=True)
    else:
        res["reopen_error"] = p.stderr[-2000:]
        print(f"# chroma reopen failed: {p.stderr[-500:]}", flush=True)
    return res


def chroma_concurrency(col, queries, args):
    """Closed-loop Python threads calling collection.query, per level."""
    rows = []
    for c in args.concurrency:
        lat = [[] for _ in range(c)]
        stop = time.perf_counter() + args.duration_s

        def worker(w):
            i = w
            while time.perf_counter() < stop:
                q = queries[i % len(queries)].tolist()
                s = time.perf_counter()
                col.query(query_embeddings=[q], n_results=K)
                lat[w].append(time.perf_counter() - s)
                i += c

        t = time.perf_counter()
        ths = [threading.Thread(target=worker, args=(w,)) for w in range(c)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        el = time.perf_counter() - t
        allv = [x for L in lat for x in L]
        row = {"clients": c, "bulk_load": False, "qps": len(allv) / el,
               "p50_ms": pct(allv, 0.5), "p99_ms": pct(allv, 0.99), "queries": len(allv)}
        print(f"# chroma {c} threads: {row['qps']:.0f} QPS p50={row['p50_ms']:.2f} "
              f"p99={row['p99_ms']:.2f} ms", flush=True)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- glimpse


class GlimpseServer:
    """A `glimpse serve --model none` child process on an ephemeral port."""

    def __init__(self, binary, data_dir, import_root=None):
        self.binary, self.data_dir, self.import_root = binary, data_dir, import_root
        self.proc = None
        self.url = None

    def start(self, timeout=120):
        cmd = [self.binary, "serve", "--data-dir", str(self.data_dir), "--bind", "127.0.0.1:0",
               "--model", "none"]
        if self.import_root:
            cmd += ["--import-root", str(self.import_root)]
        t = time.perf_counter()
        log = open(Path(self.data_dir).parent / f"{Path(self.data_dir).name}.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log)
        deadline = t + timeout
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"glimpse exited (rc={self.proc.poll()}) before listening; "
                                   f"see {log.name}")
            line = line.decode(errors="replace").strip()
            if line.startswith("glimpse listening on "):
                self.url = line.split("listening on ", 1)[1].strip()
                break
            if time.perf_counter() > deadline:
                raise RuntimeError("glimpse did not start in time")
        # Keep draining stdout so the child never blocks on a full pipe.
        threading.Thread(target=lambda: self.proc.stdout.read(), daemon=True).start()
        return time.perf_counter() - t

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def _check(r):
    if r.status_code >= 400:
        raise RuntimeError(f"{r.request.method} {r.url}: {r.status_code} {r.text[:500]}")
    return r.json()


def glimpse_bulk_load_shards(sess, url, coll, shards):
    t = time.perf_counter()
    rows = 0
    for p in shards:
        with open(p, "rb") as f:
            r = sess.post(f"{url}/v1/collections/{coll}/bulk-load", data=f,
                          headers={"Content-Type": "application/vnd.apache.parquet",
                                   "Content-Length": str(os.path.getsize(p))},
                          timeout=3600)
        rows += _check(r).get("rows", 0)
    return time.perf_counter() - t, rows


def glimpse_wait_indexed(sess, url, coll, timeout=3600):
    """Polls the collection until no segment waits for its deferred ANN index build."""
    t = time.perf_counter()
    while True:
        info = _check(sess.get(f"{url}/v1/collections/{coll}"))
        if info.get("unindexed_rows", 0) == 0:
            return info
        if time.perf_counter() - t > timeout:
            raise RuntimeError(f"{coll}: still {info['unindexed_rows']} unindexed rows after {timeout} s")
        time.sleep(0.05)


def glimpse_search(sess, url, coll, q, params):
    body = {"vector": q, "k": K}
    body.update(params)
    r = sess.post(f"{url}/v1/collections/{coll}/search", json=body, timeout=60)
    return _check(r)


def run_glimpse(args, out, base, queries, gt, shards):
    import psutil
    import requests

    res = {"system": "glimpse"}
    n = len(base)
    qlist = [q.tolist() for q in queries]

    # 1) Optional: one JSON {"paths": [...]} request through --import-root, own data dir.
    if not args.skip_paths_load:
        d = out / "glimpse-data-paths"
        if d.exists():
            shutil.rmtree(d)
        srv = GlimpseServer(args.glimpse_bin, d, import_root=out / "data")
        srv.start()
        try:
            sess = requests.Session()
            rel = str(shard_dir(out, n).relative_to(out / "data"))
            t = time.perf_counter()
            r = _check(sess.post(f"{srv.url}/v1/collections/bench/bulk-load",
                                 json={"paths": [rel]}, timeout=3600))
            res["load_paths_s"] = time.perf_counter() - t
            res["load_paths_answer"] = r
            # Durable now; searchable too (exactly, until the deferred index is built).
            s = time.perf_counter()
            glimpse_search(sess, srv.url, "bench", qlist[0], {})
            res["load_paths_first_query_ms"] = (time.perf_counter() - s) * 1e3
            glimpse_wait_indexed(sess, srv.url, "bench")
            res["load_paths_indexed_s"] = time.perf_counter() - t
            print(f"# glimpse load (one JSON paths request): {res['load_paths_s']:.2f} s "
                  f"({n / res['load_paths_s']:.0f} vec/s) to durable + searchable "
                  f"(first query {res['load_paths_first_query_ms']:.0f} ms), "
                  f"{res['load_paths_indexed_s']:.2f} s to fully indexed", flush=True)
        finally:
            srv.stop()
            shutil.rmtree(d, ignore_errors=True)

    # 2) Main instance: one Parquet upload per shard.
    d = out / "glimpse-data"
    if d.exists():
        shutil.rmtree(d)
    srv = GlimpseServer(args.glimpse_bin, d, import_root=out / "data")
    srv.start()
    try:
        sess = requests.Session()
        _check(sess.post(f"{srv.url}/v1/collections",
                         json={"name": "bench", "dim": int(base.shape[1]), "metric": "cosine"}))
        t0 = time.perf_counter()
        secs, rows = glimpse_bulk_load_shards(sess, srv.url, "bench", shards)
        s = time.perf_counter()
        glimpse_search(sess, srv.url, "bench", qlist[0], {})  # searchable
        res["first_query_ms"] = (time.perf_counter() - s) * 1e3
        res["load_s"] = secs
        # Fully indexed: the deferred index builds (and any background merge) are done.
        glimpse_wait_indexed(sess, srv.url, "bench")
        res["indexed_s"] = time.perf_counter() - t0
        print(f"# glimpse per-shard load: {secs:.2f} s to durable + searchable (first query "
              f"{res['first_query_ms']:.0f} ms), {res['indexed_s']:.2f} s to fully indexed", flush=True)
        # Searchable now. Merge the per-upload segments before measuring queries, so that the
        # numbers are for the settled layout, not for a background merge competing for the cores.
        t = time.perf_counter()
        info = _check(sess.post(f"{srv.url}/v1/collections/bench/compact", timeout=3600))
        res["compact_s"], res["segments"] = time.perf_counter() - t, info.get("segments")
        print(f"# glimpse compact: {res['compact_s']:.1f} s -> {res['segments']} segment(s)",
              flush=True)
        res["count"] = _check(sess.get(f"{srv.url}/v1/collections/bench")).get("count")
        print(f"# glimpse load (one upload per shard): {secs:.2f} s ({n / secs:.0f} vec/s), "
              f"count={res['count']}", flush=True)

        def measure(label, params):
            for q in qlist[:20]:
                glimpse_search(sess, srv.url, "bench", q, params)
            lat, found, server_ms = [], [], []
            for q in qlist:
                s = time.perf_counter()
                r = glimpse_search(sess, srv.url, "bench", q, params)
                lat.append(time.perf_counter() - s)
                found.append([int(x["id"]) for x in r["results"]])
                server_ms.append(r.get("took_ms", {}).get("search", float("nan")))
            row = {"config": label, "params": params, "recall": recall(found, gt),
                   "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
                   "server_search_p50_ms": float(np.nanmedian(server_ms)),
                   "qps_1client": len(lat) / sum(lat)}
            print(f"# glimpse {label}: recall@10={row['recall']:.3f} p50={row['p50_ms']:.2f} ms "
                  f"p99={row['p99_ms']:.2f} ms (server search p50 {row['server_search_p50_ms']:.2f} ms)",
                  flush=True)
            # The same setting timed by a compiled HTTP client (one keep-alive connection): the
            # Python client above spends ~2.5 ms per query on its own JSON and requests work.
            if args.loadgen_bin:
                rl = loadgen_latency(args, out, srv.url, params)
                if rl:
                    row["http_rust_p50_ms"], row["http_rust_p99_ms"] = rl["p50_ms"], rl["p99_ms"]
                    print(f"#   same over HTTP from the Rust client: p50={rl['p50_ms']:.2f} ms "
                          f"p99={rl['p99_ms']:.2f} ms", flush=True)
            return row

        res["search"] = [measure("default", {})]
        for np_, rf in args.settings:
            res["search"].append(measure(f"nprobe={np_} refine={rf}", {"nprobe": np_, "refine": rf}))

        p = psutil.Process(srv.proc.pid)
        res["rss_bytes"] = p.memory_info().rss
        res["rss_anon_bytes"] = rss_anon(srv.proc.pid)
        res["file_pmd_mapped_bytes"] = file_pmd_mapped(srv.proc.pid)
        res["disk_bytes"] = du_bytes(d, exclude=("spool",))
        res["bytes_per_vector_rss"] = res["rss_bytes"] / n
        res["bytes_per_vector_disk"] = res["disk_bytes"] / n
        print(f"# glimpse memory: {res['rss_bytes'] / 2**20:.0f} MiB RSS "
              f"(anon {(res['rss_anon_bytes'] or 0) / 2**20:.0f} MiB, "
              f"on huge pages {(res['file_pmd_mapped_bytes'] or 0) / 2**20:.0f} MiB), "
              f"disk {res['disk_bytes'] / 2**20:.0f} MiB", flush=True)

        if args.loadgen_bin and not args.skip_concurrency:
            res["concurrency"] = run_loadgen(args, out, srv.url, shards[0])

        # Reopen: SIGKILL (no clean shutdown), spawn, first answer.
        srv.kill()
        t = time.perf_counter()
        listen_s = srv.start()
        sess = requests.Session()
        r = glimpse_search(sess, srv.url, "bench", qlist[0], {})
        res["reopen_s"] = time.perf_counter() - t
        res["reopen_listen_s"] = listen_s
        res["reopen_first_id"] = r["results"][0]["id"] if r["results"] else None
        print(f"# glimpse reopen after SIGKILL: {res['reopen_s']:.3f} s to first answer "
              f"({listen_s:.3f} s to listening)", flush=True)
        # Serving memory: the reopened process after all queries at default settings. Unlike
        # the loading process it has not touched every vector page (load and index build do),
        # so its RSS is what serving needs: heap, PQ lists, and the rows re-ranking read.
        for q in qlist:
            glimpse_search(sess, srv.url, "bench", q, {})
        p = psutil.Process(srv.proc.pid)
        res["serving_rss_bytes"] = p.memory_info().rss
        res["serving_rss_anon_bytes"] = rss_anon(srv.proc.pid)
        res["serving_file_pmd_mapped_bytes"] = file_pmd_mapped(srv.proc.pid)
        print(f"# glimpse serving memory after reopen + {len(qlist)} queries: "
              f"{res['serving_rss_bytes'] / 2**20:.0f} MiB RSS "
              f"(anon {(res['serving_rss_anon_bytes'] or 0) / 2**20:.0f} MiB, on huge pages "
              f"{(res['serving_file_pmd_mapped_bytes'] or 0) / 2**20:.0f} MiB)", flush=True)
    finally:
        srv.stop()
    return res


def loadgen_latency(args, out, url, params):
    """p50/p99 of one client issuing queries back to back for 3 s at ``params``."""
    cmd = [args.loadgen_bin, "--url", url, "--collection", "bench",
           "--queries", str(out / "data" / "queries.npy"), "--concurrency", "1",
           "--duration-s", "3", "--k", str(K), "--json"]
    if "nprobe" in params:
        cmd += ["--nprobe", str(params["nprobe"])]
    if "refine" in params:
        cmd += ["--refine", str(params["refine"])]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    return None


def run_loadgen(args, out, url, shard):
    """Runs the Rust loadgen per level, without and with a bulk-load running."""
    rows = []
    for bulk in (False, True):
        cmd = [args.loadgen_bin, "--url", url, "--collection", "bench",
               "--queries", str(out / "data" / "queries.npy"),
               "--concurrency", ",".join(map(str, args.concurrency)),
               "--duration-s", str(args.duration_s), "--k", str(K), "--json"]
        if bulk:
            # Upserts the same ids again and again: the collection keeps N points.
            cmd += ["--bulk-load", str(shard), "--bulk-collection", "bench"]
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        sys.stderr.write(p.stderr)
        if p.returncode != 0:
            print(f"# loadgen exited with rc={p.returncode} (errors counted per level below)", flush=True)
        for line in p.stdout.splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                r["bulk_load"] = bulk
                rows.append(r)
                print(f"# glimpse {r['clients']} clients{' + bulk-load' if bulk else ''}: "
                      f"{r['qps']:.0f} QPS p50={r['p50_ms']:.2f} p99={r['p99_ms']:.2f} ms", flush=True)
    return rows


# ---------------------------------------------------------------- report


def fmt(x, unit=""):
    if x is None:
        return "-"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:.0f}{unit}"
        if abs(x) >= 1:
            return f"{x:.2f}{unit}"
        return f"{x:.3f}{unit}"
    return f"{x}{unit}"


def ratio(g, c):
    """Glimpse vs chroma for a lower-is-better metric: '12.3x better' or '2.0x worse'."""
    if not g or not c:
        return "-"
    return f"{c / g:.1f}x better" if c >= g else f"{g / c:.1f}x worse"


def best_at_recall(rows, target):
    """Fastest p99 among rows with recall >= target."""
    ok = [r for r in rows if r["recall"] >= target - 1e-9]
    return min(ok, key=lambda r: r["p99_ms"]) if ok else None


def glimpse_p99(row):
    """Glimpse's p99 as a compiled HTTP client sees it when measured, else the Python one."""
    return row.get("http_rust_p99_ms", row["p99_ms"])


def report(g, c, n, notes):
    lines = []
    add = lines.append
    add(f"\n## Glimpse vs ChromaDB: N={n}, k={K}")
    for s in notes:
        add(f"# {s}")
    add(f"{'metric':<44} {'glimpse':>12} {'chromadb':>12} {'ratio':>10}")

    def row(name, gv, cv, r):
        add(f"{name:<44} {fmt(gv):>12} {fmt(cv):>12} {r:>10}")

    row("load to durable+searchable (s)", g.get("load_s"), c.get("load_s"),
        ratio(g.get("load_s"), c.get("load_s")))
    if g.get("indexed_s"):
        row("load to fully indexed (s)", g.get("indexed_s"), c.get("load_s"),
            ratio(g.get("indexed_s"), c.get("load_s")))
    if g.get("load_paths_s"):
        row("load, one JSON paths request (s)", g.get("load_paths_s"), c.get("load_s"),
            ratio(g["load_paths_s"], c.get("load_s")))
    if g.get("load_paths_indexed_s"):
        row("  same, to fully indexed (s)", g.get("load_paths_indexed_s"), c.get("load_s"),
            ratio(g["load_paths_indexed_s"], c.get("load_s")))
    gs, cs = g.get("search", []), c.get("search", [])
    if gs and cs:
        for cr in cs:
            gr = best_at_recall(gs, cr["recall"])
            add(f"-- chroma {cr['config']}: recall {cr['recall']:.3f}; glimpse fastest p99 at >= that recall: "
                f"{gr['config'] + ' recall ' + format(gr['recall'], '.3f') if gr else 'none'}")
            if gr:
                row("   p50 latency (ms)", gr["p50_ms"], cr["p50_ms"], ratio(gr["p50_ms"], cr["p50_ms"]))
                row("   p99 latency (ms)", gr["p99_ms"], cr["p99_ms"], ratio(gr["p99_ms"], cr["p99_ms"]))
                if gr.get("http_rust_p99_ms") is not None:
                    row("   p50 latency, Rust HTTP client (ms)", gr["http_rust_p50_ms"], cr["p50_ms"],
                        ratio(gr["http_rust_p50_ms"], cr["p50_ms"]))
                    row("   p99 latency, Rust HTTP client (ms)", gr["http_rust_p99_ms"], cr["p99_ms"],
                        ratio(gr["http_rust_p99_ms"], cr["p99_ms"]))
    for r in gs:
        rust = (f" (Rust client p50 {r['http_rust_p50_ms']:.2f} ms p99 {r['http_rust_p99_ms']:.2f} ms)"
                if r.get("http_rust_p99_ms") is not None else "")
        add(f"   glimpse {r['config']:<30} recall {r['recall']:.3f} p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms{rust}")
    for r in cs:
        add(f"   chroma  {r['config']:<30} recall {r['recall']:.3f} p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms")
    row("memory bytes/vector (RSS)", g.get("bytes_per_vector_rss"), c.get("bytes_per_vector_rss"),
        ratio(g.get("bytes_per_vector_rss"), c.get("bytes_per_vector_rss")))
    if g.get("rss_anon_bytes") is not None and c.get("rss_anon_bytes"):
        row("memory bytes/vector (anon RSS)", g["rss_anon_bytes"] / n, c["rss_anon_bytes"] / n,
            ratio(g["rss_anon_bytes"], c["rss_anon_bytes"]))
    if g.get("serving_rss_bytes") and c.get("bytes_per_vector_rss"):
        row("memory bytes/vector (glimpse reopened, serving)", g["serving_rss_bytes"] / n,
            c["bytes_per_vector_rss"], ratio(g["serving_rss_bytes"] / n, c["bytes_per_vector_rss"]))
    row("disk bytes/vector", g.get("bytes_per_vector_disk"), c.get("bytes_per_vector_disk"),
        ratio(g.get("bytes_per_vector_disk"), c.get("bytes_per_vector_disk")))
    row("reopen to first answer (s)", g.get("reopen_s"), c.get("reopen_s"),
        ratio(g.get("reopen_s"), c.get("reopen_s")))
    for sysname, res in (("glimpse", g), ("chroma", c)):
        for r in res.get("concurrency", []):
            add(f"   {sysname:<7} {r['clients']:>2} clients{' + bulk-load' if r.get('bulk_load') else '':<12} "
                f"{r['qps']:>8.0f} QPS  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms")

    # Goals.
    goals = []
    for key, what in (("load_s", "per-shard uploads, to durable + searchable"),
                      ("indexed_s", "per-shard uploads, to fully indexed"),
                      ("load_paths_s", "one paths request, to durable + searchable"),
                      ("load_paths_indexed_s", "one paths request, to fully indexed")):
        if g.get(key) and c.get("load_s"):
            sp = c["load_s"] / g[key]
            goals.append(f"load >= {GOALS['load_speedup_min']:.0f}x faster ({what}): {sp:.1f}x -> "
                         f"{'MET' if sp >= GOALS['load_speedup_min'] else 'NOT MET'}")
    if gs and cs:
        cr = max(cs, key=lambda r: r["recall"])
        gr = best_at_recall(gs, cr["recall"])
        goals.append("p99 below chroma's at >= its best recall: " +
                     (f"{glimpse_p99(gr):.2f} vs {cr['p99_ms']:.2f} ms -> "
                      f"{'MET' if glimpse_p99(gr) < cr['p99_ms'] else 'NOT MET'}" if gr else
                      f"no glimpse setting reaches recall {cr['recall']:.3f} -> NOT MET"))
    if g.get("bytes_per_vector_rss") and c.get("bytes_per_vector_rss"):
        r = min(g["bytes_per_vector_rss"], g.get("serving_rss_bytes", float("inf")) / n) / c["bytes_per_vector_rss"]
        goals.append(f"memory/vector <= 1/20 of chroma's, by RSS (file-backed pages included): "
                     f"1/{1 / r:.1f} -> "
                     f"{'MET' if r <= GOALS['memory_per_vector_ratio_max'] else 'NOT MET'}")
    if g.get("rss_anon_bytes") and c.get("rss_anon_bytes"):
        # Anonymous memory is what cannot be dropped under pressure: chromadb's HNSW graph and
        # vectors live there; Glimpse's raw vectors are file-backed mmap pages (page cache).
        r = g["rss_anon_bytes"] / c["rss_anon_bytes"]
        goals.append(f"memory/vector <= 1/20 of chroma's, by anonymous RSS (heap): 1/{1 / r:.1f} -> "
                     f"{'MET' if r <= GOALS['memory_per_vector_ratio_max'] else 'NOT MET'}")
    if g.get("reopen_s") is not None:
        goals.append(f"reopen <= {GOALS['reopen_s_max']} s: {g['reopen_s']:.3f} s -> "
                     f"{'MET' if g['reopen_s'] <= GOALS['reopen_s_max'] else 'NOT MET'}")
    for s in goals:
        add(f"GOAL {s}")
    return "\n".join(lines), goals


def parse_settings(s):
    out = []
    for part in filter(None, s.split(",")):
        a, b = part.split(":")
        out.append((int(a), int(b)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--shard-rows", type=int, default=50_000)
    ap.add_argument("--systems", default="chroma,glimpse")
    ap.add_argument("--out", default=None, help="default bench-out/chroma-N")
    ap.add_argument("--from-npy", default=None, help="dir with base.npy/queries.npy from synth_dump")
    ap.add_argument("--glimpse-bin", default=os.environ.get("GLIMPSE_BIN"))
    ap.add_argument("--loadgen-bin", default=os.environ.get("LOADGEN_BIN"))
    ap.add_argument("--settings", type=parse_settings, default=parse_settings("8:10,16:10,32:40"),
                    help="glimpse nprobe:refine pairs measured besides the default")
    ap.add_argument("--chroma-batch", type=int, default=5000)
    ap.add_argument("--chroma-ef", type=lambda s: [int(x) for x in s.split(",") if x],
                    default=[10, 200], help="extra chroma ef_search values (set via collection.modify)")
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    ap.add_argument("--duration-s", type=float, default=10.0)
    ap.add_argument("--skip-concurrency", action="store_true")
    ap.add_argument("--skip-paths-load", action="store_true")
    args = ap.parse_args()
    systems = set(filter(None, args.systems.split(",")))
    out = Path(args.out or f"bench-out/chroma-{args.n}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    if "glimpse" in systems and not args.glimpse_bin:
        sys.exit("--glimpse-bin (or GLIMPSE_BIN) is needed to measure glimpse")

    base, queries, shards, source = load_data(args, out)
    n = len(base)
    t = time.perf_counter()
    gt = exact_topk(base, queries)
    print(f"# exact top-{K} for {len(queries)} queries in {time.perf_counter() - t:.1f} s", flush=True)

    notes = [f"data: {source['generator']}; N={n} d={base.shape[1]} queries={len(queries)}",
             f"machine: {os.cpu_count()} cpus; {os.uname().machine}; "
             f"load average at start {os.getloadavg()[0]:.1f}"]
    results = {}
    for name, fn in (("chroma", run_chroma), ("glimpse", run_glimpse)):
        f = out / f"{name}.json"
        if name in systems:
            r = fn(args, out, base, queries, gt) if name == "chroma" else fn(args, out, base, queries, gt, shards)
            r["source"] = source
            r["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            r["loadavg_after"] = os.getloadavg()
            f.write_text(json.dumps(r, indent=1))
            results[name] = r
        elif f.exists():
            r = json.loads(f.read_text())
            if r.get("source") == source:
                results[name] = r
                notes.append(f"{name} numbers from an earlier run at {r.get('measured_at')} (same data)")
    text, goals = report(results.get("glimpse", {}), results.get("chroma", {}), n, notes)
    print(text)
    (out / "results.json").write_text(json.dumps({"n": n, "source": source, "results": results,
                                                  "goals": goals, "table": text}, indent=1))
    print(f"# results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
