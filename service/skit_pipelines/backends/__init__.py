"""Execution backends."""

from skit_pipelines.backends.base import Backend, RunSink

__all__ = ["Backend", "RunSink"]
