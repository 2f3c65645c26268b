"""The small library every skit-pipelines component image installs.

- `db`: open the calls or metrics database from its URL (SQLite or PostgreSQL).
- `migrations`: the versioned schema of those databases; components never create schema.
- `cli`: argument parsing and the exit-code contract (2 bad input, 13 internal error).
- `outputs`: writing output parameter and artifact files at the paths KFP hands a step.
- `loader`: importing a component module from its image folder (for tests).
"""
