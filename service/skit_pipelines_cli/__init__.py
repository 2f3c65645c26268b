"""The skit-pipelines command: client commands against a server, and `serve`."""
