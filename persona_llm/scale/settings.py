"""The `[scale]` table of a config file: where the heavy work runs (this process, or a Ray cluster)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from persona_llm.errors import ConfigError

EXECUTORS: tuple[str, ...] = ("local", "ray")


class ScaleSettings(BaseModel):
    """Where embedding, persona and brief writing run.

    executor: "local" (the default: this process, threads for the LLM calls) or "ray".
    ray_address: the cluster to join: None starts a Ray on this machine for the run and stops it after;
        "auto" joins the one `ray start` runs on this node; "ray://HOST:10001" connects as a Ray client.
    num_cpus: CPUs of a Ray started on this machine (None: all).
    embed_actors: embedding actors, each loading the model once (None: one per `embed_cpus` CPUs of the
        cluster, or per `embed_gpus` GPUs, at most one per input block).
    embed_cpus / embed_gpus: resources of one embedding actor (embed_gpus > 0 runs the model on "cuda").
    embed_batch_size: texts per call of an actor (the model batches inside it by its own batch_size).
    embed_block_rows: texts per Arrow block of the input; blocks are what actors are handed.
    llm_urls: OpenAI-compatible endpoints serving the same model (a vLLM server per GPU node); segments
        (and the briefs of `brief --all-personas`) are spread over them, `concurrency` (LLM settings) at a
        time on each. Empty: the one endpoint of
        the LLM settings (or the embedded server this machine starts).
    writer_cpus: CPUs one persona- or brief-writing actor reserves (it waits on the endpoint most of the time and
        embeds its statements for the support check).
    """

    model_config = ConfigDict(extra="forbid")

    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    num_cpus: int | None = Field(default=None, ge=1)
    embed_actors: int | None = Field(default=None, ge=1)
    embed_cpus: float = Field(default=1.0, gt=0)
    embed_gpus: float = Field(default=0.0, ge=0)
    embed_batch_size: int = Field(default=256, ge=1)
    embed_block_rows: int = Field(default=2048, ge=1)
    llm_urls: list[str] = Field(default_factory=list)
    writer_cpus: float = Field(default=0.5, gt=0)

    @field_validator("llm_urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return [u.rstrip("/") for u in urls]

    @classmethod
    def from_table(cls, table: dict[str, Any], *, source: str) -> ScaleSettings:
        """From a config file's [scale] table; a misspelt key or bad value names the file and the key."""
        try:
            return cls(**table)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "[scale]"
            if err["type"] == "extra_forbidden":
                known = ", ".join(cls.model_fields)
                raise ConfigError(f"{source}: unknown key in [scale]: {where}; use {known}") from None
            raise ConfigError(f"{source}: [scale] {where}: {err['msg']}") from None

    def with_overrides(self, **overrides: Any) -> ScaleSettings:
        """These settings with the given values (None ignored), e.g. from command-line flags."""
        values = {**self.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
        try:
            return ScaleSettings(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ConfigError(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
