"""A pipeline's DAG laid out for drawing: layered left to right, computed once per version.

The nodes are the tasks of the IR's root DAG. A task holding a sub-DAG (a condition, a
loop) is one node standing for every step under it ("for-loop-2[3]/square" belongs to
node "for-loop-2"); its state is the summary of theirs, so iterations the IR cannot
name ahead of time still show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skit_pipelines.catalog import upstream_tasks
from skit_pipelines.domain import Step, StepState

NODE_WIDTH = 184
NODE_HEIGHT = 40
COLUMN_GAP = 56
ROW_GAP = 16
MARGIN = 8
_LABEL_CHARACTERS = 24


@dataclass(frozen=True)
class Node:
    id: str
    """The task's display name: a step's name, or the first part of its sub-DAG's steps'."""
    label: str
    component: str
    group: bool
    """It holds a sub-DAG: several steps (iterations, branches) under one node."""
    x: int
    y: int


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: str
    """SVG path data from the source's right edge to the target's left edge."""


@dataclass(frozen=True)
class Layout:
    width: int
    height: int
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "node_width": NODE_WIDTH,
            "node_height": NODE_HEIGHT,
            "nodes": [
                {
                    "id": n.id,
                    "label": n.label,
                    "component": n.component,
                    "group": n.group,
                    "x": n.x,
                    "y": n.y,
                }
                for n in self.nodes
            ],
            "edges": [{"source": e.source, "target": e.target, "path": e.path} for e in self.edges],
        }


def layout(spec: Mapping[str, Any]) -> Layout:
    """The root DAG of a compiled PipelineSpec, in columns by level (the longest chain of
    tasks a task waits for), each column ordered by its parents' rows to keep edges short."""
    tasks: Mapping[str, Any] = spec.get("root", {}).get("dag", {}).get("tasks", {})
    components: Mapping[str, Any] = spec.get("components", {})
    parents = {
        key: sorted(d for d in upstream_tasks(task) if d in tasks) for key, task in tasks.items()
    }
    levels: dict[str, int] = {}

    def level(key: str, seen: frozenset[str]) -> int:
        if key not in levels:
            waits = [p for p in parents[key] if p not in seen]
            levels[key] = 1 + max((level(p, seen | {key}) for p in waits), default=-1)
        return levels[key]

    columns: dict[int, list[str]] = {}
    for key in sorted(tasks):
        columns.setdefault(level(key, frozenset()), []).append(key)
    rows: dict[str, float] = {}
    for index in sorted(columns):
        column = columns[index]
        # Barycentre ordering: each task near the mean row of the tasks it waits for.
        column.sort(
            key=lambda k: (
                sum(rows[p] for p in parents[k]) / len(parents[k]) if parents[k] else 0.0,
                k,
            )
        )
        for row, key in enumerate(column):
            rows[key] = row
    names = {key: _display_name(key, task) for key, task in tasks.items()}
    nodes = []
    for key, task in tasks.items():
        component = task.get("componentRef", {}).get("name", "")
        nodes.append(
            Node(
                id=names[key],
                label=_short(names[key]),
                component=component,
                group="dag" in components.get(component, {}),
                x=MARGIN + levels[key] * (NODE_WIDTH + COLUMN_GAP),
                y=MARGIN + int(rows[key]) * (NODE_HEIGHT + ROW_GAP),
            )
        )
    by_id = {n.id: n for n in nodes}
    edges = tuple(
        _edge(by_id[names[parent]], by_id[names[key]])
        for key in sorted(tasks)
        for parent in parents[key]
    )
    width = max((n.x for n in nodes), default=0) + NODE_WIDTH + MARGIN
    height = max((n.y for n in nodes), default=0) + NODE_HEIGHT + MARGIN
    return Layout(width, height, tuple(sorted(nodes, key=lambda n: (n.x, n.y))), edges)


def _display_name(key: str, task: Mapping[str, Any]) -> str:
    return str(task.get("taskInfo", {}).get("name") or key)


def _short(name: str) -> str:
    return name if len(name) <= _LABEL_CHARACTERS else name[: _LABEL_CHARACTERS - 1] + "…"


def _edge(source: Node, target: Node) -> Edge:
    x1, y1 = source.x + NODE_WIDTH, source.y + NODE_HEIGHT // 2
    x2, y2 = target.x, target.y + NODE_HEIGHT // 2
    bend = (x2 - x1) // 2
    return Edge(source.id, target.id, f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}")


_SUMMARY_ORDER = (
    StepState.FAILED,
    StepState.RUNNING,
    StepState.CANCELLED,
    StepState.PENDING,
)


def node_states(nodes: Sequence[Node], steps: Sequence[Step]) -> dict[str, str]:
    """Each node's state name: its step's, or for a group the most telling of its steps'
    (FAILED, then RUNNING, CANCELLED, PENDING; else SUCCEEDED when all ended well)."""
    by_node: dict[str, list[StepState]] = {}
    for step in steps:
        head = step.name.split("/", 1)[0].split("[", 1)[0]
        by_node.setdefault(head, []).append(step.state)
    states: dict[str, str] = {}
    for node in nodes:
        found = by_node.get(node.id)
        if not found:
            continue
        if len(found) == 1 and not node.group:
            states[node.id] = found[0].name
            continue
        summary = next((s for s in _SUMMARY_ORDER if s in found), None)
        if summary is None:
            summary = (
                StepState.SKIPPED
                if all(s is StepState.SKIPPED for s in found)
                else StepState.SUCCEEDED
            )
        states[node.id] = summary.name
    return states
