"""Embedding throughput: the local executor against the ray executor (Ray Data actors) on this machine.

    python bench/bench_ray_embed.py                  # 2000 texts, a local Ray with 2 CPUs
    python bench/bench_ray_embed.py --n 5000 --num-cpus 2 --block-rows 500

On one box Ray cannot be faster than the local embedder, which already uses every core through ONNX
Runtime's threads: Ray adds its start-up (once per process), an actor start and a model load per actor
for each Ray Data job, and moving texts and vectors through its object store. What Ray buys is more
machines (each node's actors add that node's cores or GPU); this bench measures the price on one.

Texts: 20 Newsgroups bodies cut to `--chars` characters (the shared data), or, without it, the test
fixture's customer texts repeated. The embedding cache is not used (every text goes to the model).
Printed: seconds and texts/s per setting, with and without fixed costs, the minimum and mean cosine
between the local and the Ray vectors, the CPU and the load average.

Cosine: the int8 backend's vectors depend on which texts share a batch (its dynamic quantisation scales
activations over the whole padded batch), locally too: 500 of these texts embedded in batches of 50
instead of all at once gave min cosine 0.972, mean 0.992 (fp32 ONNX: 1.000000). Ray's blocks group texts
differently from one local call, so compare the fp32 backend (`--backend onnx`) for equality of vectors.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PERSONA_LLM_DATA", str(ROOT.parent / "shared" / "data")))
sys.path.insert(0, str(ROOT))


def load_texts(n: int, chars: int) -> tuple[list[str], str]:
    import pandas as pd

    posts = DATA / "20newsgroups" / "posts.csv.gz"
    if posts.exists():
        bodies = pd.read_csv(posts, usecols=["body"])["body"].dropna().astype(str)
        bodies = bodies[bodies.str.strip().str.len() >= 20].sample(frac=1.0, random_state=0)
        return [b[:chars] for b in bodies.iloc[:n]], f"20 Newsgroups bodies, first {chars} chars"
    from tests.run_store_data import customer_texts

    base = customer_texts()["text"].tolist()
    return [f"{base[i % len(base)]} ({i})" for i in range(n)], "test fixture customer texts"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--chars", type=int, default=300)
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    p.add_argument("--block-rows", type=int, default=250, help="texts per Arrow block handed to an actor")
    p.add_argument("--backend", default="onnx-int8", choices=("torch", "onnx", "onnx-int8"))
    args = p.parse_args()

    from persona_llm.scale import RayExecutor, ScaleSettings
    from persona_llm.scale.ray_embed import RayEmbedder
    from persona_llm.schema.manifest import cpu_description
    from persona_llm.segment.embed import SentenceTransformerEmbedder

    texts, what = load_texts(args.n, args.chars)
    rows: list[tuple[str, float, float, str]] = []

    t0 = time.perf_counter()
    local = SentenceTransformerEmbedder(backend=args.backend)
    local.encode(["warm up the model"])
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    local_vectors = local.encode(texts)
    local_s = time.perf_counter() - t1
    rows.append((f"local ({args.backend}, all cores)", local_s, local_s + load_s, f"model load {load_s:.1f} s"))

    t2 = time.perf_counter()
    executor = RayExecutor(ScaleSettings(executor="ray", num_cpus=args.num_cpus, embed_block_rows=args.block_rows))
    executor.start()
    ray_start_s = time.perf_counter() - t2
    cosines: list[np.ndarray] = []
    try:
        for actors, cpus in ((args.num_cpus, 1.0), (1, float(args.num_cpus))):
            executor.settings = executor.settings.with_overrides(embed_actors=actors, embed_cpus=cpus)
            embedder = RayEmbedder(SentenceTransformerEmbedder(backend=args.backend), executor)
            for attempt in ("first job", "second job"):
                t3 = time.perf_counter()
                vectors = embedder.encode(texts)
                job_s = time.perf_counter() - t3
                cosines.append(np.sum(vectors * local_vectors, axis=1))
                label = f"ray: {actors} actor(s) x {cpus:g} CPU, {attempt}"
                rows.append((label, job_s, job_s + ray_start_s, "actor start + model load inside each job"))
    finally:
        executor.close()

    print(f"{len(texts)} texts ({what}); {cpu_description()}; load average {os.getloadavg()[0]:.2f}")
    both = np.concatenate(cosines)
    print(f"Ray start-up {ray_start_s:.1f} s (once per process); cosine local vs ray: min {both.min():.6f}, mean {both.mean():.6f}")
    print(f"{'setting':<44} {'seconds':>8} {'texts/s':>8} {'with fixed costs':>17}  note")
    for label, seconds, with_fixed, note in rows:
        print(f"{label:<44} {seconds:8.1f} {len(texts) / seconds:8.1f} {len(texts) / with_fixed:17.1f}  {note}")


if __name__ == "__main__":
    main()
