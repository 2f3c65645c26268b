"""Where step outputs live: a local directory (the embedded default) or S3."""

from skit_pipelines.artifacts.base import ArtifactStore, StoredArtifact, content_hash
from skit_pipelines.artifacts.local import LocalArtifactStore

__all__ = ["ArtifactStore", "LocalArtifactStore", "StoredArtifact", "content_hash"]
