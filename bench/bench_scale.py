"""Segments for 10k, 100k and 1M users on one machine: wall time and peak memory per stage, with and
without a sample fit, given the users' vectors.

    python bench/bench_scale.py --users 10000 100000            # ~15-30 min on 2 cores
    nice python bench/bench_scale.py --users 1000000 --full-cap-s 1200

USER VECTORS ARE PARTLY SYNTHETIC, and the output says so: the real ones are the 8,112 users of the whole
20 Newsgroups file (cleaned and embedded by the pipeline itself: int8 MiniLM, length-weighted mean of
each user's texts). Beyond them, each user is a real user's vector plus Gaussian noise, re-normalised,
scaled so that a copy's cosine to its source is about the median cosine between a real user and their
nearest real neighbour (copies fill the space between real users instead of piling onto them). Each
user inherits its source's main newsgroup, for an ARI against topic labels beside the ARI between modes.

Modes, each in its own process (peak memory is its own):
  * sample: SampleFitClusterer(sample_size=--fit-sample): UMAP + HDBSCAN on a seeded sample, everyone
    else assigned by SegmentAssigner in chunks, from a memory-mapped .npy (np.load(mmap_mode="r")).
  * full: the same objects with the sample = everyone (what SegmentPipeline does without fit_sample),
    stopped when it runs past --full-cap-s seconds or --max-rss-gb of memory (and said so).
Stages: sample, reduce, cluster, assign (the clusterer's own), then centroids (chunked over the memmap)
and store: the run's assignments (CSV, one row per user) and user vectors (.npy) through RunDir, and the
segments with their centroids and representatives in a persistent Chroma store (ChromaStore.write_segments:
what a run stores, a few records per segment, not per user; representatives are the texts of the real
users nearest each centroid, keywords left empty: no texts for synthetic users). --chroma-users N also
times N per-user records in a Chroma collection, to say what storing every user there would cost.
Peak memory per stage: the highest resident set sampled every 50 ms during the stage, as anonymous
memory (heap: what the process allocated) and file-backed (pages of the memory-mapped vectors, which the
kernel can drop at will), read from /proc/self/status.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
NG = SHARED / "20newsgroups" / "posts.csv.gz"


# --------------------------------------------------------------------------------------------------
# data: real user vectors, replicated with noise
# --------------------------------------------------------------------------------------------------


def real_users(work: Path, cache_dir: str) -> dict[str, np.ndarray]:
    """The whole 20NG file through the pipeline's own ingest, clean, embed and users stages (segments
    given by newsgroup, so no clustering runs): user vectors, ids, main newsgroup and one text each."""
    out = work / "real_users.npz"
    if out.exists():
        return dict(np.load(out, allow_pickle=False))
    import pandas as pd

    from persona_llm.segment.cluster import GivenLabels
    from persona_llm.segment.pipeline import SegmentPipeline

    df = pd.read_csv(NG, dtype=str)
    main = df.groupby("user_id")["newsgroup"].agg(lambda s: s.value_counts().index[0])
    codes = {g: i for i, g in enumerate(sorted(main.unique()))}
    pipe = SegmentPipeline(cache_dir=cache_dir, clusterer=GivenLabels(), lexical_weight=0.0, reducer="none")
    pipe.fit(df, user_column="user_id", text_column="body", id_column="doc_id", attribute_columns=[],
             y={u: codes[g] for u, g in main.items()})
    first = pipe.texts_.groupby("user_id", sort=False)["text"].first()
    data = {
        "vectors": pipe.user_embeddings_.astype(np.float32),
        "user_ids": pipe.user_ids_.astype(str),
        "labels": np.array([codes[main[u]] for u in pipe.user_ids_], dtype=np.int32),
        "texts": np.array([first[u][:600] for u in pipe.user_ids_], dtype=str),
    }
    np.savez(out, **data)
    return data


def noise_scale(real: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """(sigma, target cosine): Gaussian noise of norm ~sigma around a unit vector gives cosine ~
    1/sqrt(1+sigma^2); the target is the median cosine of a real user to their nearest real neighbour."""
    rng = np.random.default_rng(seed)
    probe = rng.choice(len(real), size=min(2000, len(real)), replace=False)
    sims = real[probe] @ real.T
    sims[np.arange(len(probe)), probe] = -1.0
    target = float(np.median(sims.max(axis=1)))
    return float(np.sqrt(1.0 / target**2 - 1.0)), target


def replicate(real: np.ndarray, n: int, path: Path, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """Write `n` user vectors to `path` (.npy, float32) in chunks: the real ones first (all of them when
    n allows), then noisy copies of seeded random real users. Returns each row's source (real row)."""
    sigma, _ = noise_scale(real, seed)
    rng = np.random.default_rng(seed)
    n_real = min(n, len(real))
    sources = np.concatenate([rng.permutation(len(real))[:n_real], rng.integers(0, len(real), n - n_real)]).astype(np.int32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, real.shape[1]))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows = real[sources[start:stop]].astype(np.float32)
        synthetic = np.arange(start, stop) >= n_real
        if synthetic.any():
            noise = rng.standard_normal((int(synthetic.sum()), real.shape[1]), dtype=np.float32)
            rows[synthetic] += noise * np.float32(sigma / np.sqrt(real.shape[1]))
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        out[start:stop] = rows
    out.flush()
    del out
    return sources


# --------------------------------------------------------------------------------------------------
# one mode in its own process
# --------------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class StageMemory:
    """Peak anonymous and file-backed resident memory per stage, sampled every 50 ms; stops the process
    (exit code 3) when anonymous memory passes `cap_mb`, so a full fit cannot take the machine down."""

    def __init__(self, cap_mb: float) -> None:
        self.cap_mb = cap_mb
        self.stage = "start"
        self.peaks: dict[str, dict[str, float]] = {}
        self.times: dict[str, float] = {}
        self._t0 = time.perf_counter()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            anon, file = _status_kb("RssAnon") / 1024, _status_kb("RssFile") / 1024
            peak = self.peaks.setdefault(self.stage, {"anon_mb": 0.0, "file_mb": 0.0})
            peak["anon_mb"], peak["file_mb"] = max(peak["anon_mb"], anon), max(peak["file_mb"], file)
            if anon > self.cap_mb:
                sys.stderr.write(f"memory cap: {anon:.0f} MB anonymous in stage {self.stage}\n")
                sys.stderr.flush()
                os._exit(3)
            time.sleep(0.05)

    def hook(self, name: str, event: str, seconds: float) -> None:
        if event == "start":
            self.stage = name
        else:
            self.times[name] = seconds

    def begin(self, name: str) -> None:
        self.stage = name
        self._t0 = time.perf_counter()

    def end(self, name: str) -> None:
        self.times[name] = time.perf_counter() - self._t0


def child(args: argparse.Namespace) -> None:
    """One mode on one vectors file; writes labels (.npy) and a JSON of times and peaks."""
    from persona_llm.common.vectors import segment_centroids
    from persona_llm.runs.rundir import RunDir
    from persona_llm.schema.segments import Representative, Segment, SegmentQuality, SegmentSet
    from persona_llm.segment.sample_fit import SampleFitClusterer
    from persona_llm.segment.store import ChromaStore

    mem = StageMemory(args.max_rss_gb * 1024)
    out = Path(args.out)
    mem.begin("open")
    vectors = np.load(args.vectors, mmap_mode="r")
    n = len(vectors)
    mem.end("open")
    size = args.fit_sample if args.mode == "sample" else n
    clusterer = SampleFitClusterer(size, chunk_size=args.chunk_size, random_state=0, stage_hook=mem.hook)
    clusterer.fit(vectors)
    labels = clusterer.labels_
    np.save(out / f"labels-{args.mode}.npy", labels)

    mem.begin("centroids")
    centroids = segment_centroids(vectors, labels, chunk_size=args.chunk_size)
    mem.end("centroids")

    mem.begin("store: assignments")
    real_texts = np.load(Path(args.work) / "real_users.npz", allow_pickle=False)["texts"]  # read once
    sources = np.load(Path(args.work) / f"sources-{n}.npy")
    shutil.rmtree(out / f"run-{args.mode}", ignore_errors=True)
    shutil.rmtree(out / "chroma-users", ignore_errors=True)
    run = RunDir.create(out / f"run-{args.mode}")
    import pandas as pd

    user_ids = np.char.add("u", np.arange(n).astype(str))
    run.save_assignments(pd.DataFrame({
        "user_id": user_ids, "segment_id": labels, "probability": np.round(clusterer.probabilities_, 4),
        "assigned_by": clusterer.assigned_by_, "n_texts": np.ones(n, dtype=np.int64),
    }))
    mem.end("store: assignments")
    mem.begin("store: vectors")
    run.save_user_embeddings(vectors)
    mem.end("store: vectors")
    mem.begin("store: segments")
    sizes = np.bincount(labels[labels >= 0], minlength=len(centroids))
    # representatives: the 8 users nearest each centroid (a chunked top-k scan), with their source's text
    best = np.full((len(centroids), 8), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(centroids), 8), dtype=np.int64)
    for start in range(0, n, args.chunk_size):
        lab = labels[start : start + args.chunk_size]
        members = np.flatnonzero(lab >= 0)
        block = np.asarray(vectors[start : start + args.chunk_size])[members]
        sims = np.einsum("ij,ij->i", block, centroids[lab[members]])
        # each segment's 8 best of this chunk: sort by (segment, -similarity), keep the first 8 of each run
        order = np.lexsort((-sims, lab[members]))
        seg_sorted = lab[members][order]
        first = np.searchsorted(seg_sorted, seg_sorted, side="left")
        rank = np.arange(len(order)) - first
        top = order[rank < 8]
        for s_id in np.unique(lab[members][top]):
            pick = top[lab[members][top] == s_id]
            pool_s = np.concatenate([best[s_id], sims[pick]])
            pool_r = np.concatenate([best_rows[s_id], members[pick] + start])
            keep = np.argsort(-pool_s)[:8]
            best[s_id], best_rows[s_id] = pool_s[keep], pool_r[keep]
    segments = []
    rep_vectors: dict[str, np.ndarray] = {}
    for s in range(len(centroids)):
        reps = []
        for sim, row in zip(best[s], best_rows[s], strict=True):
            if not np.isfinite(sim):
                continue
            text_id = f"t{row}"
            reps.append(Representative(text_id=text_id, user_id=str(user_ids[row]), text=str(real_texts[sources[row]]),
                                       language="en", similarity=round(float(sim), 4)))
            rep_vectors[text_id] = np.asarray(vectors[row])
        segments.append(Segment(segment_id=s, size=int(sizes[s]), share=round(float(sizes[s]) / n, 6), n_texts=int(sizes[s]),
                                keywords=[], representative_text_ids=[r.text_id for r in reps], representatives=reps,
                                quality=SegmentQuality(mean_probability=0.0, cohesion=0.0)))
    segment_set = SegmentSet(run_id=f"scale-{n}-{args.mode}", n_users=n, n_assigned=int((labels >= 0).sum()),
                             coverage=round(float((labels >= 0).mean()), 4), noise_share=round(float((labels < 0).mean()), 4),
                             segments=segments)
    run.save_segments(segment_set)
    store = ChromaStore(path=run.store_path)
    counts = store.write_segments(segment_set, centroids, rep_vectors)
    store.close()
    mem.end("store: segments")

    chroma_users: dict[str, float] = {}
    if args.chroma_users:
        mem.begin("chroma-users")
        store = ChromaStore(path=out / "chroma-users")
        coll = store.collection("users", segment_set.run_id)
        k = min(args.chroma_users, n)
        t = time.perf_counter()
        for start in range(0, k, 5000):
            stop = min(k, start + 5000)
            coll.add(ids=[str(u) for u in user_ids[start:stop]], embeddings=np.asarray(vectors[start:stop]),
                     metadatas=[{"segment_id": int(v)} for v in labels[start:stop]])
        chroma_users = {"records": float(k), "seconds": time.perf_counter() - t}
        store.close()
        mem.end("chroma-users")

    result = {
        "n": n, "mode": args.mode, "fit_sample": int(len(clusterer.sample_index_)),
        "times": {**mem.times}, "peaks": mem.peaks, "segments": int(clusterer.n_segments_),
        "coverage": float((labels >= 0).mean()), "engine": clusterer.engine_,
        "min_cluster_size": clusterer.min_cluster_size_, "reducer": clusterer.reducer_label(),
        "store_counts": counts, "chroma_users": chroma_users,
        "peak_rss_mb": _status_kb("VmHWM") / 1024,
    }
    (out / f"result-{args.mode}.json").write_text(json.dumps(result), encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------


def run_mode(args: argparse.Namespace, n: int, mode: str, vectors: Path, out: Path, cap_s: float | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--mode", mode, "--vectors", str(vectors), "--out", str(out),
           "--work", str(args.work_dir), "--fit-sample", str(args.fit_sample), "--chunk-size", str(args.chunk_size),
           "--max-rss-gb", str(args.max_rss_gb), "--chroma-users", str(args.chroma_users if mode == "sample" else 0)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=cap_s, check=False)
    except subprocess.TimeoutExpired:
        return {"stopped": f"stopped at the time cap ({cap_s:.0f} s)", "wall": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    if proc.returncode == 3:
        return {"stopped": f"stopped at the memory cap ({args.max_rss_gb:g} GB anonymous)", "wall": wall}
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        return {"stopped": f"failed (exit {proc.returncode})", "wall": wall}
    result = json.loads((out / f"result-{mode}.json").read_text(encoding="utf-8"))
    result["wall"] = wall
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--modes", nargs="+", default=["sample", "full"], choices=["sample", "full"])
    p.add_argument("--fit-sample", type=int, default=None, help="default: sample_fit.DEFAULT_FIT_SAMPLE")
    p.add_argument("--chunk-size", type=int, default=65_536)
    p.add_argument("--full-cap-s", type=float, default=1800.0, help="stop a full fit past this many seconds")
    p.add_argument("--max-rss-gb", type=float, default=10.0, help="stop any mode past this much anonymous memory")
    p.add_argument("--chroma-users", type=int, default=0, help="also time this many per-user Chroma records (sample mode)")
    p.add_argument("--work-dir", default=None, help="keeps the real user vectors between runs (default: a temp dir)")
    p.add_argument("--cache-dir", default=None, help="embedding cache for the real users")
    p.add_argument("--json", default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="sample", help=argparse.SUPPRESS)
    p.add_argument("--vectors", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    from persona_llm.segment.sample_fit import DEFAULT_FIT_SAMPLE

    args.fit_sample = args.fit_sample or DEFAULT_FIT_SAMPLE
    if args.child:
        return child(args)

    from sklearn.metrics import adjusted_rand_score

    from persona_llm.schema.manifest import cpu_description

    tmp = tempfile.TemporaryDirectory(prefix="bench_scale-")
    args.work_dir = Path(args.work_dir or tmp.name)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_description()}, {os.cpu_count()} cores; date {time.strftime('%Y-%m-%d %H:%M')}; "
          f"load average {os.getloadavg()[0]:.2f}")
    t = time.perf_counter()
    real = real_users(args.work_dir, args.cache_dir or str(args.work_dir / "cache"))
    sigma, target = noise_scale(real["vectors"])
    print(f"real users: {len(real['vectors'])} (whole 20NG file, int8 MiniLM, {time.perf_counter() - t:.0f} s); "
          f"SYNTHETIC users beyond them: a real user's vector + Gaussian noise (sigma {sigma:.2f}: cosine to the "
          f"source ~{target:.2f}, the median real nearest-neighbour cosine), re-normalised")
    results: dict[int, dict[str, Any]] = {}
    for n in args.users:
        vec_path = args.work_dir / f"vectors-{n}.npy"
        t = time.perf_counter()
        sources = replicate(real["vectors"], n, vec_path)
        np.save(args.work_dir / f"sources-{n}.npy", sources)
        make_s = time.perf_counter() - t
        n_real = min(n, len(real["vectors"]))
        print(f"\n== {n:,} users ({n_real:,} real, {n - n_real:,} synthetic): vectors {vec_path.stat().st_size / 2**30:.2f} GiB "
              f"written in {make_s:.0f} s (not counted below: the vectors are given)", flush=True)
        out = args.work_dir / f"out-{n}"
        out.mkdir(exist_ok=True)
        results[n] = {}
        for mode in args.modes:
            cap = args.full_cap_s if mode == "full" else None
            r = run_mode(args, n, mode, vec_path, out, cap)
            results[n][mode] = r
            if "stopped" in r:
                print(f"  {mode}: {r['stopped']} after {r['wall']:.0f} s", flush=True)
                continue
            times = " ".join(f"{k} {v:.1f}s" for k, v in r["times"].items())
            peaks = " ".join(f"{k} {v['anon_mb']:.0f}+{v['file_mb']:.0f}" for k, v in r["peaks"].items() if k != "start")
            print(f"  {mode}: fit on {r['fit_sample']:,} users, {r['segments']} segments (min_cluster_size {r['min_cluster_size']}, "
                  f"{r['engine']}, reducer {r['reducer']}), coverage {r['coverage']:.1%}; wall {r['wall']:.0f} s "
                  f"(process, imports included), peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
            print(f"    stage seconds: {times}", flush=True)
            print(f"    stage peak MB (anonymous+file-backed): {peaks}", flush=True)
            if r.get("chroma_users"):
                c = r["chroma_users"]
                print(f"    per-user Chroma records: {c['records']:.0f} in {c['seconds']:.0f} s = {c['records'] / c['seconds']:.0f}/s "
                      f"-> {n / (c['records'] / c['seconds']) / 60:.0f} min for all {n:,} (extrapolated)", flush=True)
        truth = real["labels"][sources]
        for mode in args.modes:
            f = out / f"labels-{mode}.npy"
            if f.exists() and "stopped" not in results[n][mode]:
                lab = np.load(f)
                results[n][mode]["ari_topics"] = float(adjusted_rand_score(truth, lab))
                print(f"  {mode}: ARI vs the sources' main newsgroup {results[n][mode]['ari_topics']:.3f}")
        usable = {m: (out / f"labels-{m}.npy").exists() and "stopped" not in results[n].get(m, {}) for m in ("sample", "full")}
        if usable["sample"] and "full" not in args.modes and usable["full"]:
            print("  (full-fit labels from an earlier run of this bench in the same --work-dir: same seeded vectors)")
        if all(usable.values()):
            a, b = np.load(out / "labels-sample.npy"), np.load(out / "labels-full.npy")
            both = (a >= 0) & (b >= 0)
            results[n]["ari_sample_vs_full"] = float(adjusted_rand_score(a, b))
            results[n]["ari_sample_vs_full_assigned"] = float(adjusted_rand_score(a[both], b[both]))
            print(f"  ARI sample-fit vs full fit: {results[n]['ari_sample_vs_full']:.3f} over all users "
                  f"(unassigned = one group), {results[n]['ari_sample_vs_full_assigned']:.3f} over the {both.mean():.0%} "
                  "both put in a segment", flush=True)
        vec_path.unlink()
        for leftover in (*out.glob("run-*"), out / "chroma-users"):  # the runs' copies of the vectors
            shutil.rmtree(leftover, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    tmp.cleanup()


if __name__ == "__main__":
    main()
