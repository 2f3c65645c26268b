"""record_conversations: record prompts and generated conversations in the metrics database.

Reads generate_conversations' JSON lines (and its report, for the generator and the
temperature) and writes one `prompt_details` row per distinct prompt of a situation and one
`generated_conversations` row per conversation, with the client, flow template, project
name and the annotation store's project the conversations were uploaded to. Rows are keyed
by a hash of their content, so a retried or rerun step records nothing twice. One
transaction: all rows or none.

The successor of the original's upload_conversation_data_to_metrics_db.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from skit_components import cli
from skit_components.conversations import conversation_key
from skit_components.db import DatabaseError, connect
from skit_components.migrations import METRICS, SchemaError, require_schema
from skit_components.outputs import write_json, write_parameter

logger = logging.getLogger("record_conversations")

DB_ENV = "METRICS_DB_URL"
SCHEMA_VERSION = 3
"""The metrics schema version with prompt and conversation keys."""
LLM_PREFIX = "llm:"
_SHOWN = 20


@dataclass(frozen=True)
class Context:
    """What the conversations were made for; recorded with every row."""

    client_id: int = 0
    template_id: int = 0
    project_name: str = ""
    annotation_project_id: int = 0
    """0: not uploaded to the annotation store."""


@dataclass(frozen=True)
class Record:
    situation_id: int
    prompt: str
    model: str
    turns: list[dict[str, str]]
    key: str
    """conversation_key of the JSON line."""


@dataclass(frozen=True)
class Recorded:
    prompts: int
    """Prompt rows this run inserted."""
    conversations: int
    """Conversation rows this run inserted."""
    existing: int
    """Conversations recorded before (by an earlier attempt or run)."""
    prompt_ids: list[int]


def read_records(path: Path) -> list[Record]:
    """The conversations of a generate_conversations artifact.

    Raises:
        cli.BadInput: a missing file, a line that is not a conversation, or none at all.
    """
    if not path.is_file():
        raise cli.BadInput(f"the conversations file {path} does not exist")
    records = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
                generator = str(value["generator"])
                turns = [{"role": str(t["role"]), "text": str(t["text"])} for t in value["turns"]]
                record = Record(
                    situation_id=int(value["situation_id"]),
                    prompt=str(value["prompt"]),
                    model=generator.removeprefix(LLM_PREFIX),
                    turns=turns,
                    key=conversation_key(value),
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise cli.BadInput(
                    f"{path.name} line {number} is not a generated conversation "
                    f"(generate_conversations): {type(exc).__name__}: {exc}"
                ) from None
            if not turns:
                raise cli.BadInput(f"{path.name} line {number} has no turns")
            records.append(record)
    if not records:
        raise cli.BadInput(f"{path.name} has no conversations: nothing to record")
    return records


def read_temperature(report: Path | None) -> float:
    """The sampling temperature in generate_conversations' report; 0 for the template
    generator (which has none) or without a report."""
    if report is None or not report.is_file():
        return 0.0
    try:
        value = json.loads(report.read_text(encoding="utf-8")).get("temperature")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise cli.BadInput(f"the generation report {report.name} is not JSON: {exc}") from None
    return float(value) if isinstance(value, int | float) else 0.0


def prompt_key(record: Record, temperature: float) -> str:
    identity = [record.situation_id, record.model, temperature, record.prompt]
    return hashlib.sha256(json.dumps(identity).encode("utf-8")).hexdigest()[:32]


def record(
    database_url: str, records: list[Record], context: Context, temperature: float
) -> Recorded:
    """Inserts the prompts and conversations not recorded yet, in one transaction.

    Raises:
        cli.BadInput: a conversation of a situation the database does not have.
        cli.ComponentError: the database is unusable or not migrated.
    """
    per_prompt = Counter(prompt_key(r, temperature) for r in records)
    prompts_before = conversations_new = existing = 0
    prompt_ids: dict[str, int] = {}
    try:
        with connect(database_url) as db:
            require_schema(db, METRICS, SCHEMA_VERSION)
            d = db.dialect
            with db.transaction():
                situations = sorted({r.situation_id for r in records})
                known = {
                    row[0]
                    for row in db.fetchall(
                        f"SELECT id FROM situation_scenario_mapper WHERE {d.any_of('id')}",
                        (d.list_param(situations),),
                    )
                }
                unknown = [s for s in situations if s not in known]
                if unknown:
                    raise cli.BadInput(f"unknown situation ids {unknown[:_SHOWN]}")
                for r in records:
                    key = prompt_key(r, temperature)
                    if key in prompt_ids:
                        continue
                    row = db.fetchone("SELECT id FROM prompt_details WHERE prompt_key = ?", (key,))
                    if row is None:
                        db.execute(
                            "INSERT INTO prompt_details (situation_id, client_id, template_id, "
                            "project_name, model, temperature, n_iter, n_choice, prompt, "
                            "prompt_key) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?) "
                            "ON CONFLICT (prompt_key) WHERE prompt_key <> '' DO NOTHING",
                            (
                                r.situation_id,
                                context.client_id,
                                context.template_id,
                                context.project_name,
                                r.model,
                                temperature,
                                per_prompt[key],
                                r.prompt,
                                key,
                            ),
                        )
                        row = db.fetchone(
                            "SELECT id FROM prompt_details WHERE prompt_key = ?", (key,)
                        )
                        if row is None:
                            raise cli.ComponentError(f"prompt {key} was not inserted")
                    else:
                        prompts_before += 1
                    prompt_ids[key] = int(row[0])
                for r in records:
                    if db.fetchone(
                        "SELECT 1 FROM generated_conversations WHERE conversation_key = ?",
                        (r.key,),
                    ):
                        existing += 1
                        continue
                    db.execute(
                        "INSERT INTO generated_conversations (prompt_id, situation_id, "
                        "conversation, project_name, conversation_key, annotation_project_id) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (conversation_key) "
                        "WHERE conversation_key <> '' DO NOTHING",
                        (
                            prompt_ids[prompt_key(r, temperature)],
                            r.situation_id,
                            json.dumps(r.turns, ensure_ascii=False),
                            context.project_name,
                            r.key,
                            context.annotation_project_id or None,
                        ),
                    )
                    conversations_new += 1
    except (DatabaseError, SchemaError) as exc:
        raise cli.ComponentError(f"metrics database: {exc}") from exc
    result = Recorded(
        prompts=len(prompt_ids) - prompts_before,
        conversations=conversations_new,
        existing=existing,
        prompt_ids=sorted(set(prompt_ids.values())),
    )
    logger.info(
        "recorded %d prompts and %d conversations; %d conversations were recorded before",
        result.prompts,
        result.conversations,
        result.existing,
    )
    return result


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="record_conversations", description=__doc__)
    parser.add_argument("--conversations", type=Path, required=True, help="input: JSON lines")
    parser.add_argument("--generation-report", type=Path, default=None, help="input: JSON")
    parser.add_argument("--client-id", type=cli.integer, default=0)
    parser.add_argument("--template-id", type=cli.integer, default=0)
    parser.add_argument("--project-name", default="")
    parser.add_argument("--annotation-project-id", type=cli.integer, default=0)
    parser.add_argument("--prompt-count", type=Path, required=True, help="output")
    parser.add_argument("--conversation-count", type=Path, required=True, help="output")
    parser.add_argument("--existing-count", type=Path, required=True, help="output")
    parser.add_argument("--report", type=Path, required=True, help="output: JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The step: parses `argv`, records, writes the outputs; returns the exit code."""

    def body() -> None:
        args = _parse_args(argv)
        for name in ("client_id", "template_id", "annotation_project_id"):
            if getattr(args, name) < 0:
                raise cli.BadInput(f"{name} must be >= 0, got {getattr(args, name)}")
        context = Context(
            client_id=args.client_id,
            template_id=args.template_id,
            project_name=args.project_name.strip(),
            annotation_project_id=args.annotation_project_id,
        )
        records = read_records(args.conversations)
        temperature = read_temperature(args.generation_report)
        database_url = cli.required_env(DB_ENV, "the metrics database URL")
        result = record(database_url, records, context, temperature)
        write_parameter(args.prompt_count, result.prompts)
        write_parameter(args.conversation_count, result.conversations)
        write_parameter(args.existing_count, result.existing)
        write_json(
            args.report,
            {
                "prompts": result.prompts,
                "conversations": result.conversations,
                "existing": result.existing,
                "prompt_ids": result.prompt_ids,
                "temperature": temperature,
                "annotation_project_id": context.annotation_project_id or None,
            },
        )

    return cli.run("record_conversations", body)


if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
