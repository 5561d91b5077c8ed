"""`ColumnMap`: which input columns hold the user id, the text, the text id and the user attributes.

Read from a config's `[columns]` table or given in Python; the ingest stage maps input rows onto the
texts frame (schema/frames.py) with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, field_validator, model_validator

from persona_llm.errors import ConfigError


def _one_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _split_names(value: Any) -> Any:
    """Accept "a, b" as well as ["a", "b"] for a list of column names."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ColumnMap(BaseModel):
    """Which input columns hold the user id, the text, the text id and the user attributes.

    `id_column=None`: text ids are made up from the row number ("r1", "r2", ...).
    `attribute_columns=None`: every other column is a user attribute; `[]`: none.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_column: str
    text_column: str
    id_column: str | None = None
    attribute_columns: Annotated[list[str] | None, BeforeValidator(_split_names)] = None

    @field_validator("user_column", "text_column", "id_column", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> ColumnMap:
        # ConfigError is not a ValueError, so pydantic lets it through as a one-line error
        if not self.user_column:
            raise ConfigError("the user column name is empty")
        if not self.text_column:
            raise ConfigError("the text column name is empty")
        if self.id_column == "":
            object.__setattr__(self, "id_column", None)
        if self.attribute_columns is not None:
            object.__setattr__(self, "attribute_columns", list(dict.fromkeys(self.attribute_columns)))
        return self

    @classmethod
    def from_toml(cls, path: str | Path) -> ColumnMap:
        """Read the `[columns]` table (keys: user, text, id, attributes) of a TOML file."""
        import tomllib

        p = Path(path)
        try:
            doc = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: file not found") from None
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{p}: not valid TOML: {_one_line(exc)}") from None
        table = doc.get("columns")
        if not isinstance(table, dict):
            raise ConfigError(f"{p}: no [columns] table (keys: user, text, id, attributes)")
        return cls.from_table(table, source=p)

    @classmethod
    def from_table(cls, table: Any, source: str | Path) -> ColumnMap:
        """A config's `[columns]` table (keys: user, text, id, attributes); errors name `source`.

        The one place a column table is read, for the Python API and the CLI alike, so a misspelt key
        is an error everywhere instead of being ignored.
        """
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [columns] must be a table (keys: user, text, id, attributes)")
        unknown = sorted(set(table) - set(COLUMN_KEYS))
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) in [columns]: {', '.join(unknown)}; use user, text, id, attributes"
            )
        for key in ("user", "text"):
            if table.get(key) is None:
                raise ConfigError(f"{source}: [columns] needs {key} = \"<column name>\"")
        try:
            return cls(**{COLUMN_KEYS[k]: v for k, v in table.items() if v is not None})
        except ConfigError as exc:
            raise ConfigError(f"{source}: [columns] {exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ConfigError(f"{source}: [columns] {where}: {first['msg']}") from None


#: `[columns]` keys of a config file -> ColumnMap fields.
COLUMN_KEYS = {"user": "user_column", "text": "text_column", "id": "id_column", "attributes": "attribute_columns"}


