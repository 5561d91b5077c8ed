"""Suite files (`evals/suites/*.toml`): which data, which metric groups, which thresholds.

    name = "ci"
    metrics = ["labels", "internal", "grounding", "claims", "privacy"]   # groups, see GROUPS
    [thresholds]                    # <metric>_min / <metric>_max, metric names from metrics.METRICS
    quote_verified_min = 1.0
    pii_max = 0
    [[datasets]]                    # shared data sets the suite builds runs from (run_suite)
    source = "20newsgroups"
    labels = "newsgroup"
    max_users = 120
    [datasets.thresholds]           # per data set, on top of the suite's
    ari_min = 0.3

`load_dataset` turns a data set entry into a texts frame (text_id, user_id, text, source_row + attribute
columns) from the shared data; the shopping set has no user ids, so its "users" are pseudo-users made of
`texts_per_user` reviews of one category (results on it are about grouping reviews, not real people).
Source "cases" is a CSV the project wrote itself (`evals/cases/`, columns text_id, user_id, text and the
listed `attributes`), its `path` relative to the suite file: for what no shared set can test, such as
customers whose texts say who they are.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from persona_llm.errors import ConfigError
from persona_llm.evaluation.metrics import METRICS

GROUPS = (
    "labels",
    "internal",
    "grounding",
    "claims",
    "narrative",
    "distinctness",
    "representativeness",
    "stability",
    "judge",
    "chat",
    "injection",
    "privacy",
    "briefs",
)
Source = Literal["20newsgroups", "blog_authorship", "online_shopping_10_cats", "cases"]

DEFAULT_PATHS: dict[str, str] = {
    "20newsgroups": "20newsgroups/posts.csv.gz",
    "blog_authorship": "blog_authorship/posts.csv.gz",
    "online_shopping_10_cats": "online_shopping_10_cats/reviews.csv.gz",
}


def validate_thresholds(values: dict[str, float]) -> dict[str, float]:
    """Keys must be `<known metric>_min` or `<known metric>_max`."""
    for key in values:
        base, _, bound = key.rpartition("_")
        if bound not in {"min", "max"} or base not in METRICS:
            raise ValueError(
                f"unknown threshold {key!r}: use <metric>_min or <metric>_max, "
                f"metric one of {sorted(METRICS)}"
            )
    return {k: float(v) for k, v in values.items()}


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    silhouette_sample: int = Field(default=2000, ge=10, description="users sampled for silhouette and DBCV")
    heldout_texts_per_user: int = Field(
        default=5, ge=1, description="held-out texts per user for identification"
    )
    stability_fraction: float = Field(default=0.9, gt=0, le=1)
    stability_seeds: list[int] = Field(default_factory=lambda: [1, 2], min_length=2)
    min_jaccard: float = Field(
        default=0.5, gt=0, le=1, description="a re-run segment 'keeps' a persona above this"
    )
    max_personas: int | None = Field(
        default=None, ge=2, description="write personas for the largest N segments only (bounds LLM time)"
    )
    chat_segments: int = Field(default=3, ge=1, description="chat questions: share questions for the N largest segments")
    chat_terms: int = Field(default=2, ge=0, description="chat questions: 'which segment talks most about' words")
    injection_variants: int = Field(default=20, ge=1, le=20, description="planted instructions tried (10 kinds x 2 languages)")


class DataSet(BaseModel):
    """One shared data set sliced into a run."""

    model_config = ConfigDict(extra="forbid")

    source: Source
    name: str = ""
    path: str | None = Field(
        default=None,
        description="relative to the shared data dir (default per source); for source 'cases', relative to the suite file and required",
    )
    labels: str | None = Field(default=None, description="user label column scored by the labels group")
    negative_control: str | None = Field(
        default=None, description="a column nothing should recover (blog: sign)"
    )
    attributes: list[str] | None = Field(
        default=None, description="attribute columns kept; default per source"
    )
    withheld: list[str] = Field(
        default_factory=list,
        description="attribute columns the pipeline and the writer never see; the claims group checks the "
        "personas' demographic claims against them, read from the input (the honest test of those claims)",
    )
    max_users: int | None = Field(default=None, ge=2)
    min_texts_per_user: int = Field(default=1, ge=1)
    max_texts_per_user: int | None = Field(default=None, ge=1)
    texts_per_user: int = Field(default=5, ge=1, description="pseudo-user size for sources without user ids")
    max_chars: int = Field(default=4000, ge=50, description="texts are cut to this many characters")
    seed: int = 0
    max_personas: int | None = Field(
        default=None, ge=2, description="personas for this data set's largest N segments (default: options.max_personas)"
    )
    thresholds: dict[str, float] = Field(default_factory=dict)

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        return validate_thresholds(value)

    @model_validator(mode="after")
    def _cases_name_their_file(self) -> DataSet:
        if self.source == "cases" and not self.path:
            raise ValueError("source 'cases' needs a path (a CSV relative to the suite file)")
        return self

    @model_validator(mode="after")
    def _withheld_columns_are_loaded(self) -> DataSet:
        loaded = [*(self.attributes if self.attributes is not None else _DEFAULT_ATTRIBUTES[self.source])]
        loaded += [c for c in (self.labels, self.negative_control) if c]
        unknown = [c for c in self.withheld if c not in loaded]
        if unknown:
            raise ValueError(f"withheld {unknown} are not among the columns this data set loads: {loaded}")
        return self

    @property
    def key(self) -> str:
        return self.name or self.source


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    metrics: list[str] = Field(default_factory=lambda: list(GROUPS))
    thresholds: dict[str, float] = Field(default_factory=dict)
    options: Options = Field(default_factory=Options)
    datasets: list[DataSet] = Field(default_factory=list)
    data_dir: str | None = Field(default=None, description="shared data dir, relative to the suite file")
    report_dir: str | None = Field(
        None, description="where run_suite writes dated reports (full: bench/results)"
    )
    path: str | None = Field(default=None, exclude=True, description="the file it was loaded from")

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        return validate_thresholds(value)

    @field_validator("metrics")
    @classmethod
    def _known_groups(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(GROUPS))
        if unknown:
            raise ValueError(f"unknown metric groups {unknown}; known: {list(GROUPS)}")
        return value

    def enabled(self, group: str) -> bool:
        return group in self.metrics

    def dataset(self, key: str | None) -> DataSet | None:
        return next((d for d in self.datasets if d.key == key), None) if key else None

    def only(self, keys: list[str]) -> Suite:
        """This suite narrowed to the data sets named (by name or source), renamed `<name>-<key>...` so its
        dated record does not take the whole suite's place (the full suite is too long for one sitting on
        2 cores: it is run a data set at a time)."""
        unknown = [k for k in keys if self.dataset(k) is None]
        if unknown:
            where = self.path or self.name
            raise ConfigError(f"{where}: no data set {unknown} in the suite; it has {[d.key for d in self.datasets]}")
        chosen = [d for d in self.datasets if d.key in keys]
        return self.model_copy(update={"datasets": chosen, "name": "-".join([self.name, *[d.key for d in chosen]])})

    def thresholds_for(self, dataset: str | None = None) -> dict[str, float]:
        """The suite's thresholds, overridden by those of data set `dataset` (by name or source)."""
        merged = dict(self.thresholds)
        ds = self.dataset(dataset)
        if ds is not None:
            merged.update(ds.thresholds)
        return merged


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite TOML file; errors name the file."""
    path = Path(path)
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: suite file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        suite = Suite.model_validate({**data, "path": str(path)})
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return suite


def shared_data_dir(suite: Suite | None = None) -> Path:
    """$PERSONA_LLM_SHARED_DATA, else the suite's data_dir, else ../shared/data next to the project."""
    env = os.environ.get("PERSONA_LLM_SHARED_DATA")
    if env:
        return Path(env)
    if suite is not None and suite.data_dir:
        base = Path(suite.path).parent if suite.path else Path.cwd()
        return (base / suite.data_dir).resolve()
    return Path(__file__).resolve().parents[3] / "shared" / "data"


# ---------------------------------------------------------------------------------------------------
# Shared data -> texts frame
# ---------------------------------------------------------------------------------------------------

_DEFAULT_ATTRIBUTES: dict[str, list[str]] = {
    "20newsgroups": ["newsgroup"],
    "blog_authorship": ["gender", "age", "age_group", "industry", "sign"],
    "online_shopping_10_cats": ["cat", "label"],
    "cases": [],
}


def _pick_users(frame: pd.DataFrame, ds: DataSet) -> pd.DataFrame:
    counts = frame.groupby("user_id").size()
    users = np.sort(counts[counts >= ds.min_texts_per_user].index.astype(str).to_numpy())
    if ds.max_users is not None and len(users) > ds.max_users:
        users = np.sort(np.random.default_rng(ds.seed).choice(users, size=ds.max_users, replace=False))
    frame = frame[frame["user_id"].isin(set(users.tolist()))]
    if ds.max_texts_per_user is not None:
        frame = frame.groupby("user_id", sort=False).head(ds.max_texts_per_user)
    return frame


def load_dataset(ds: DataSet, data_dir: str | Path, *, suite_dir: str | Path | None = None) -> pd.DataFrame:
    """A texts frame (text_id, user_id, text, source_row + attributes) for one suite data set entry.
    `suite_dir`: the suite file's folder, where a "cases" entry's path starts."""
    if ds.source == "cases":
        if suite_dir is None:
            raise ConfigError(f"data set {ds.key!r}: a 'cases' file is found from its suite file's folder, and none was given")
        path = Path(suite_dir) / str(ds.path)
        if not path.exists():
            raise ConfigError(f"{path}: case file not found (data set {ds.key!r}; path is relative to the suite file)")
    else:
        path = Path(data_dir) / (ds.path or DEFAULT_PATHS[ds.source])
        if not path.exists():
            raise ConfigError(f"{path}: shared data file not found (set PERSONA_LLM_SHARED_DATA)")
    raw = pd.read_csv(path)
    raw["source_row"] = np.arange(1, len(raw) + 1)
    attributes = list(ds.attributes if ds.attributes is not None else _DEFAULT_ATTRIBUTES[ds.source])
    if ds.source == "cases":
        needed = [c for c in ("text_id", "user_id", "text") if c not in raw.columns]
        if needed:
            raise ConfigError(f"{path}: columns {needed} not in {list(raw.columns)}")
        frame = raw
    elif ds.source == "20newsgroups":
        frame = raw.rename(columns={"doc_id": "text_id", "body": "text"})
    elif ds.source == "blog_authorship":
        frame = raw.rename(columns={"blogger_id": "user_id"})
        frame["text_id"] = frame["user_id"].astype(str) + "-" + frame["post_idx"].astype(str)
    else:
        frame = _pseudo_users(raw, ds)
    frame = frame.assign(user_id=frame["user_id"].astype(str), text_id=frame["text_id"].astype(str))
    frame = frame[frame["text"].notna()]
    frame = frame.assign(text=frame["text"].astype(str).str.slice(0, ds.max_chars))
    frame = _pick_users(frame, ds)
    for col in (ds.labels, ds.negative_control):
        if col and col not in attributes:
            attributes.append(col)
    missing = [c for c in attributes if c not in frame.columns]
    if missing:
        raise ConfigError(f"{path}: columns {missing} not in {list(frame.columns)}")
    return frame[["text_id", "user_id", "text", "source_row", *attributes]].reset_index(drop=True)


def _pseudo_users(raw: pd.DataFrame, ds: DataSet) -> pd.DataFrame:
    """Pseudo-users: shuffled reviews of one category, `texts_per_user` at a time (no real user ids)."""
    rng = np.random.default_rng(ds.seed)
    parts = []
    for i, (_cat, group) in enumerate(sorted(raw.groupby("cat"), key=lambda kv: str(kv[0]))):
        group = group.iloc[rng.permutation(len(group))]
        n_users = len(group) // ds.texts_per_user
        group = group.iloc[: n_users * ds.texts_per_user]
        ids = [f"pseudo-{i:02d}-{k:05d}" for k in range(n_users) for _ in range(ds.texts_per_user)]
        parts.append(group.assign(user_id=ids))
    frame = pd.concat(parts, ignore_index=True).rename(columns={"review_id": "text_id", "review": "text"})
    if ds.max_users is not None:
        # balance categories instead of letting _pick_users sample them at random
        per_cat = max(1, ds.max_users // max(frame["cat"].nunique(), 1))
        keep = frame.drop_duplicates("user_id").groupby("cat").head(per_cat)["user_id"]
        frame = frame[frame["user_id"].isin(set(keep))]
    return frame
