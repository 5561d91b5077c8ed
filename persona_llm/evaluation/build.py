"""Builds suite runs with the real product: `SegmentPipeline` for segments, `PersonaWriter` on the
configured LLM backend for personas. `run_suite` takes `SuiteBuilder.build` as its pipeline and
`SuiteBuilder.resegment` as the stability re-segmentation, so a suite measures exactly what users run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from persona_llm.runs.rundir import MANIFEST, RunDir
from persona_llm.schema.frames import INTERNAL_COLUMNS, TEXT_ID

#: Columns that are not user attributes: ours, and the segment a run's texts.parquet records (stability
#: re-segments those texts).
_NOT_ATTRIBUTES = INTERNAL_COLUMNS | {"segment_id"}


@dataclass
class SuiteBuilder:
    """Run builder for `run_suite`.

    segment_params: `SegmentPipeline` constructor parameters (random_state comes from the suite seed).
    writer: a `PersonaWriter` (None: segments only; persona metric groups are then skipped).
    max_personas: personas only for the largest N segments of each run (None: every segment); CI uses
        this to bound LLM time, the persona metrics are then computed over those segments.
    """

    segment_params: Mapping[str, Any] = field(default_factory=dict)
    writer: Any = None
    max_personas: int | None = None

    def _pipeline(self, seed: int) -> Any:
        from persona_llm.segment.pipeline import SegmentPipeline

        return SegmentPipeline(**{**self.segment_params, "random_state": seed})

    @staticmethod
    def _fit(pipe: Any, texts: pd.DataFrame) -> Any:
        attributes = [c for c in texts.columns if c not in _NOT_ATTRIBUTES]
        return pipe.fit(texts, id_column=TEXT_ID, attribute_columns=attributes)

    def build(self, texts: pd.DataFrame, run_dir: Path, seed: int, max_personas: int | None = None) -> Path:
        """Segment `texts`, save the run to `run_dir`, then write personas into it (for the largest
        `max_personas` segments when given, a data set's own bound, else `self.max_personas`)."""
        pipe = self._fit(self._pipeline(seed), texts)
        run = RunDir(pipe.save(run_dir, overwrite=True))  # the suite's own work folder: rebuilt each time
        if self.writer is not None:
            segments = run.load_segments()
            largest = sorted(segments.segments, key=lambda s: (-s.size, s.segment_id))
            bound = max_personas if max_personas is not None else self.max_personas
            chosen = largest[:bound] if bound is not None else largest
            self.writer.write(run, segment_ids=sorted(s.segment_id for s in chosen))
        return run.path

    def resegment(self, texts: pd.DataFrame, seed: int) -> pd.DataFrame:
        """Assignments of a fresh segmentation (no save, no personas), for the stability metrics."""
        return self._fit(self._pipeline(seed), texts).assignments()  # type: ignore[no-any-return]


def run_resegmenter(run_dir: str | Path | RunDir) -> Any:
    """`segment_fn` for the stability metrics of a run on disk: re-segments (a subsample of) the run's
    saved texts with the parameters and the exact embedding model its manifest records.

    Raises InputError when the manifest cannot rebuild the pipeline (missing, or the run used a custom
    cleaner or clusterer object, which a manifest only names).
    """
    from persona_llm.errors import InputError
    from persona_llm.segment.embed import embedder_from_model_id
    from persona_llm.segment.pipeline import SegmentPipeline

    run = run_dir if isinstance(run_dir, RunDir) else RunDir.open(run_dir)
    path = run.file(MANIFEST)
    if not run.has(MANIFEST):
        raise InputError(f"{path}: missing; cannot tell how the run was segmented")
    manifest = run.load_manifest()
    recorded = manifest.parameters
    custom: list[str] = [k for k in ("clusterer", "user_aggregator", "ingester") if k in recorded]
    if recorded.get("cleaner", "default") != "default":
        custom.insert(0, "cleaner")
    if custom:
        # A manifest only names such objects; a default stand-in would measure another pipeline.
        raise InputError(f"{path}: the run used a custom {', '.join(custom)} object, which cannot be rebuilt")
    model_id = manifest.models.get("embedder")
    if not model_id:
        raise InputError(f"{path}: field 'models.embedder' is missing")
    names = set(SegmentPipeline().get_params()) - {"cleaner", "random_state", "embedder", "embedding_backend"}
    params: dict[str, Any] = {k: recorded[k] for k in names if k in recorded}
    cache_dir = params.get("cache_dir")
    if cache_dir not in (None, "none") and not Path(str(cache_dir)).exists():
        params["cache_dir"] = None  # a temporary cache that is gone: use the user's own
    # The exact model (name, backend, token cut-off) from its id, so subsample vectors match the run's.
    params["embedder"] = embedder_from_model_id(str(model_id))
    return SuiteBuilder(segment_params=params).resegment
