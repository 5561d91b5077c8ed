"""Agent definitions: who an LLM agent is (role), which prompt it uses, which tools it may call and
which Pydantic model its answer must validate against.

Definitions are TOML files in `agents/` (shipped in the wheel); `load_agent` checks each one against
what exists: the prompt folder, the output model, and the tool names a caller supplies.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from persona_llm.errors import ConfigError
from persona_llm.resource_paths import resource_root


class AgentSpec(BaseModel):
    """One agent definition, as written in `agents/<name>.toml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    role: str = Field(min_length=20, description="who the agent is and what it must and must not do")
    prompt: str = Field(description="prompt version folder under prompts/, e.g. 'persona/v1'")
    tools: tuple[str, ...] = Field(default=(), description="names of the tools the agent may call")
    output_schema: str = Field(pattern=r"^[\w.]+:\w+$", description="'module:Model' its answer validates against")

    def output_model(self) -> type[BaseModel]:
        """Import the Pydantic model named by `output_schema`."""
        module_name, _, attr = self.output_schema.partition(":")
        try:
            model = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"agent {self.name!r}: output_schema {self.output_schema!r} not importable: {exc}") from exc
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ConfigError(f"agent {self.name!r}: {self.output_schema!r} is not a Pydantic model")
        return model

    def prompt_dir(self) -> Path:
        """The agent's prompt folder; it must exist and hold at least one template."""
        folder = resource_root("prompts") / self.prompt
        if not folder.is_dir() or not any(folder.iterdir()):
            raise ConfigError(f"agent {self.name!r}: prompt folder {folder} is missing or empty")
        return folder


def load_agent(name_or_path: str | Path, *, available_tools: set[str] | None = None) -> AgentSpec:
    """Load and check an agent definition by name (from the agents folder) or by file path.

    `available_tools`, when given, is the set of tool names the caller can provide; an agent asking
    for any other tool is a configuration error rather than a failure mid-conversation.
    """
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = resource_root("agents") / f"{name_or_path}.toml"
    if not path.is_file():
        raise ConfigError(f"{path}: no such agent definition")
    try:
        spec = AgentSpec.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(file)"
        raise ConfigError(f"{path}: field {field!r}: {first['msg']}") from exc
    if spec.name != path.stem:
        raise ConfigError(f"{path}: field 'name' is {spec.name!r} but the file is named {path.stem!r}")
    try:
        spec.prompt_dir()
        spec.output_model()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if available_tools is not None:
        missing = sorted(set(spec.tools) - available_tools)
        if missing:
            raise ConfigError(f"{path}: agent {spec.name!r} needs tools that are not available: {', '.join(missing)}")
    return spec


def list_agents() -> list[AgentSpec]:
    """Every agent definition in the agents folder, checked."""
    return [load_agent(p) for p in sorted(resource_root("agents").glob("*.toml"))]
