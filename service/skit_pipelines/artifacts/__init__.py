"""Where step outputs live: a local directory (the embedded default) or S3."""

from skit_pipelines.artifacts.base import (
    ArtifactCheck,
    ArtifactStore,
    Intact,
    StoredArtifact,
    Unusable,
    content_hash,
)
from skit_pipelines.artifacts.local import LocalArtifactStore

__all__ = [
    "ArtifactCheck",
    "ArtifactStore",
    "Intact",
    "LocalArtifactStore",
    "StoredArtifact",
    "Unusable",
    "content_hash",
]
