"""Agents: definitions read from agents/*.toml (role, prompt version, tools, output schema)."""
