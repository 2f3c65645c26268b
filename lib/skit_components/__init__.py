"""The small library every skit-pipelines component image installs.

- `db`: open the calls or metrics database from its URL (SQLite or PostgreSQL).
- `migrations`: the versioned schema of those databases; components never create schema.
- `cli`: argument parsing and the exit-code contract (2 bad input, 13 internal error).
- `outputs`: writing output parameter and artifact files at the paths KFP hands a step.
- `slu`: intent classification: the tagged CSV, the split, training, evaluation, model files.
- `llm`: an OpenAI-compatible chat completions client (retries with backoff, drops and
  rejections told apart) and its configuration from LLM_BASE_URL, LLM_MODEL, LLM_API_KEY;
  needs tenacity, which the images using it install.
- `annotations`: annotation stores (the embedded database, Label Studio) behind one interface.
- `conversations`: a generated conversation's identity (task key and metrics row key).
- `model_registry`: immutable model versions and a production pointer per model kind.
- `loader`: importing a component's entrypoint (a module or a small package) from its image
  folder, as `python3 -m <name>` would (for tests and benchmarks).
"""
