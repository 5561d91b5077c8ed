"""The records a run holds, as Pydantic models and frame layouts: every layer above reads these."""
