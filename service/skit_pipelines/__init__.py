"""skit-pipelines: reusable ML pipelines run by a gRPC service."""
