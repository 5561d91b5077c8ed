"""API keys: who may call the server and what for.

A key is a random string the client sends as `Authorization: Bearer KEY` (or `X-API-Key: KEY`). The
server keeps only a salted hash of each key (HMAC-SHA256 with a per-key salt) and compares hashes with
`hmac.compare_digest`, checking every configured key on every request, so neither the stored file nor
the time an answer takes tells anything about a key.

Scopes: `read` (runs, segments, personas, texts, search, evals), `chat` (chat answers and briefs: they
spend model time), `admin` (refresh, publish, rollback). A key holds only the scopes it lists.

Where keys come from:
    a TOML file (`--keys FILE` or $PERSONA_LLM_API_KEYS_FILE), hashes only; `persona-llm api-key NAME`
    makes a key and prints its entry:
        [[key]]
        name = "dashboard"
        scopes = ["read"]
        hash = "hmac-sha256:<salt hex>:<digest hex>"
    $PERSONA_LLM_API_KEYS: `NAME:SCOPE+SCOPE:KEY` entries separated by spaces or `;` (a secret store
    puts plain keys in the environment; they are hashed on load and the plain text is not kept).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast, get_args

from persona_llm.errors import ConfigError

Scope = Literal["read", "chat", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
KEYS_FILE_ENV = "PERSONA_LLM_API_KEYS_FILE"
KEYS_ENV = "PERSONA_LLM_API_KEYS"
HASH_SCHEME = "hmac-sha256"
#: Shorter keys could be guessed; `new_key()` makes 43 random URL-safe characters after the prefix.
MIN_KEY_CHARS = 20
KEY_PREFIX = "plk_"
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's name and scopes (or the local user when no key is configured)."""

    name: str
    scopes: frozenset[str]

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes


#: Without any key the server listens on loopback only, and whoever can reach it is this user.
LOCAL_PRINCIPAL = Principal("local", frozenset(SCOPES))


@dataclass(frozen=True)
class StoredKey:
    name: str
    scopes: frozenset[str]
    salt: bytes
    digest: bytes = field(repr=False)

    def matches(self, presented: bytes) -> bool:
        return hmac.compare_digest(hmac.new(self.salt, presented, hashlib.sha256).digest(), self.digest)


def new_key() -> str:
    """A fresh random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str, *, salt: bytes | None = None) -> str:
    """The stored form of `key`: `hmac-sha256:<salt hex>:<digest hex>`."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hmac.new(salt, key.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{HASH_SCHEME}:{salt.hex()}:{digest}"


def key_entry(name: str, key: str, scopes: Iterable[str]) -> str:
    """The TOML entry of a key file for `key` (its hash, never the key)."""
    checked = _scopes(list(scopes), where=f"key {name!r}")
    _check_name(name, where="api-key")
    listed = ", ".join(f'"{s}"' for s in sorted(checked))
    return f'[[key]]\nname = "{name}"\nscopes = [{listed}]\nhash = "{hash_key(key)}"\n'


class ApiKeys:
    """The configured keys. Empty means "no keys": the server then runs open, on loopback only."""

    def __init__(self, keys: Iterable[StoredKey] = ()) -> None:
        self.keys = list(keys)
        names = [k.name for k in self.keys]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"API key names must be unique; repeated: {', '.join(dupes)}")

    def __bool__(self) -> bool:
        return bool(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def identify(self, presented: str | None) -> Principal | None:
        """The key's principal, or None for a missing or wrong key. Every stored key is compared (no early
        exit), each in constant time."""
        if not presented:
            return None
        raw = presented.encode("utf-8")
        found: StoredKey | None = None
        for key in self.keys:
            if key.matches(raw) and found is None:
                found = key
        return Principal(found.name, found.scopes) if found is not None else None

    # -- loading ------------------------------------------------------------------------------------

    @classmethod
    def from_plain(cls, keys: Mapping[str, tuple[str, Iterable[str]]]) -> ApiKeys:
        """Keys given in code: {name: (key, scopes)}; hashed here (tests, embedding the app)."""
        out = []
        for name, (key, scopes) in keys.items():
            _check_name(name, where="api keys")
            _check_key(key, where=f"key {name!r}")
            salt = secrets.token_bytes(16)
            out.append(StoredKey(name, _scopes(list(scopes), where=f"key {name!r}"), salt, _digest(salt, key)))
        return cls(out)

    @classmethod
    def from_file(cls, path: str | Path) -> ApiKeys:
        """A TOML key file of `[[key]]` entries with name, scopes and hash; errors name the file and entry."""
        p = Path(path)
        try:
            doc = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{p}: API key file not found") from exc
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
        unknown = sorted(set(doc) - {"key"})
        if unknown:
            raise ConfigError(f"{p}: unknown table(s) {', '.join(unknown)}; a key file holds [[key]] entries")
        entries = doc.get("key", [])
        if not isinstance(entries, list):
            raise ConfigError(f"{p}: key must be an array of tables: [[key]]")
        out = []
        for i, entry in enumerate(entries, start=1):
            where = f"{p}: [[key]] #{i}"
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: not a table")
            extra = sorted(set(entry) - {"name", "scopes", "hash"})
            if extra:
                raise ConfigError(f"{where}: unknown field(s) {', '.join(extra)}; use name, scopes, hash")
            name = entry.get("name")
            if not isinstance(name, str):
                raise ConfigError(f"{where}: name is missing")
            _check_name(name, where=where)
            scopes = entry.get("scopes")
            if not isinstance(scopes, list):
                raise ConfigError(f"{where} ({name}): scopes must be a list, e.g. [\"read\"]")
            salt, digest = _parse_hash(entry.get("hash"), where=f"{where} ({name})")
            out.append(StoredKey(name, _scopes(scopes, where=f"{where} ({name})"), salt, digest))
        return cls(out)

    @classmethod
    def from_env_value(cls, value: str) -> ApiKeys:
        """$PERSONA_LLM_API_KEYS: `NAME:SCOPE+SCOPE:KEY` entries separated by spaces or `;`."""
        keys: dict[str, tuple[str, list[str]]] = {}
        for i, item in enumerate(t for t in re.split(r"[;\s]+", value.strip()) if t):
            parts = item.split(":", 2)
            if len(parts) != 3:
                raise ConfigError(f"{KEYS_ENV}: entry {i + 1} is not NAME:SCOPE+SCOPE:KEY")
            name, scopes, key = parts
            if name in keys:
                raise ConfigError(f"API key names must be unique; repeated: {name}")
            keys[name] = (key, [s for s in scopes.split("+") if s])
        return cls.from_plain(keys)

    @classmethod
    def configured(cls, path: str | Path | None = None, *, environ: Mapping[str, str] | None = None) -> ApiKeys:
        """The keys from `path` (else $PERSONA_LLM_API_KEYS_FILE) plus those in $PERSONA_LLM_API_KEYS."""
        env = os.environ if environ is None else environ
        path = path or env.get(KEYS_FILE_ENV) or None
        keys = cls.from_file(path).keys if path else []
        if env.get(KEYS_ENV, "").strip():
            keys += cls.from_env_value(env[KEYS_ENV]).keys
        return cls(keys)


def _digest(salt: bytes, key: str) -> bytes:
    return hmac.new(salt, key.encode("utf-8"), hashlib.sha256).digest()


def _check_name(name: str, *, where: str) -> None:
    if not _NAME_OK.match(name):
        raise ConfigError(f"{where}: key name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")


def _check_key(key: str, *, where: str) -> None:
    if len(key) < MIN_KEY_CHARS:
        raise ConfigError(f"{where}: an API key needs at least {MIN_KEY_CHARS} characters (make one with "
                          "`persona-llm api-key NAME`)")  # fmt: skip


def _scopes(scopes: list[object], *, where: str) -> frozenset[str]:
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ConfigError(f"{where}: scopes must be some of {', '.join(SCOPES)}; got {scopes!r}")
    return frozenset(cast(list[str], scopes))


def _parse_hash(value: object, *, where: str) -> tuple[bytes, bytes]:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: hash is missing (make an entry with `persona-llm api-key NAME`)")
    parts = value.split(":")
    try:
        if len(parts) != 3 or parts[0] != HASH_SCHEME:
            raise ValueError
        salt, digest = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
        if len(salt) < 8 or len(digest) != hashlib.sha256().digest_size:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{where}: hash must look like {HASH_SCHEME}:<salt hex>:<64 hex digits>") from None
    return salt, digest
