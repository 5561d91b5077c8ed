"""The optional all-mpnet-base-v2 embedder: its name resolves, and without the extra it says what to install."""

from __future__ import annotations

from importlib import metadata

import pytest

from persona_llm.errors import BackendError
from persona_llm.segment.embed import MPNET_PARTS, SentenceTransformerEmbedder, get_embedder


def _installed() -> bool:
    try:
        metadata.distribution(MPNET_PARTS[0])
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(_installed(), reason="the mpnet extra is installed here (its loading is measured in the bench)")
def test_mpnet_without_the_extra_names_it() -> None:
    emb = get_embedder("mpnet")
    assert isinstance(emb, SentenceTransformerEmbedder)
    with pytest.raises(BackendError, match=r"persona-llm\[mpnet\]"):
        _ = emb.model_id
