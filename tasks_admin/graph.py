"""Workflow graphs, drawn server-side as SVG: the chain as a sequence, a chord's header
as parallel branches joining into its callback, each node coloured by state."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from celery import states
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from .models import PLANNED, SKIPPED, TaskRecord

MAX_NODES = 60
NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 190, 58, 70, 18, 16
COLOURS = {
    PLANNED: ("#f5f7fa", "#bcccdc"),
    SKIPPED: ("#f5f7fa", "#7b8794"),
    states.PENDING: ("#eef2f7", "#9aa5b1"),
    states.STARTED: ("#fff4d6", "#e0a800"),
    states.RETRY: ("#ffe8cc", "#e8590c"),
    states.SUCCESS: ("#e3f9e5", "#2f9e44"),
    states.FAILURE: ("#ffe3e3", "#e03131"),
    states.REVOKED: ("#e9ecef", "#495057"),
}
STATE_LABELS = dict(TaskRecord._meta.get_field("state").choices)


@dataclass
class Node:
    key: str
    label: str
    state: str = states.PENDING
    task_id: str = ""
    runtime: float | None = None
    attempts: int = 0
    finished_at: datetime | None = None
    url: str = ""


@dataclass
class Graph:
    columns: list[list[Node]]
    edges: list[tuple[str, str]] = field(default_factory=list)
    chords: list[list[str]] = field(default_factory=list)  # keys of each chord header

    @property
    def nodes(self) -> list[Node]:
        return [node for column in self.columns for node in column]


def _record_url(record: TaskRecord | None) -> str:
    if record is None:
        return ""
    try:
        return reverse("admin:tasks_admin_taskrecord_change", args=[record.pk])
    except NoReverseMatch:
        return ""


def node(key: str, label: str, record: TaskRecord | None, state: str = states.PENDING) -> Node:
    """A graph node for a task, from its record in the history (None: not recorded yet)."""
    if record is None:
        return Node(key=key, label=label, state=state)
    return Node(
        key=key,
        label=label,
        state=record.state,
        task_id=record.task_id,
        runtime=record.runtime,
        attempts=record.attempts,
        finished_at=record.finished_at,
        url=_record_url(record),
    )


def canvas_graph(root_id: str) -> Graph | None:
    """Any canvas, rebuilt from the task history: parent links make the chain, a chord's
    header tasks point at their callback. None when the root ran alone."""
    records = list(TaskRecord.objects.filter(root_id=root_id).order_by("id")[: MAX_NODES + 1])
    if len(records) < 2:
        return None
    by_id = {r.task_id: r for r in records}
    callbacks = {r.chord_id for r in records if r.chord_id}
    edges: list[tuple[str, str]] = []
    for record in records:
        if record.chord_id and record.chord_id in by_id:
            edges.append((record.task_id, record.chord_id))
        # A chord callback's parent is merely the header task that finished last.
        if record.parent_id in by_id and record.task_id not in callbacks:
            edges.append((record.parent_id, record.task_id))
    incoming = defaultdict(list)
    for a, b in edges:
        incoming[b].append(a)
    depth: dict[str, int] = {}

    def layer(task_id: str, seen: frozenset = frozenset()) -> int:
        if task_id not in depth:
            parents = [p for p in incoming[task_id] if p not in seen]
            depth[task_id] = 1 + max((layer(p, seen | {task_id}) for p in parents), default=-1)
        return depth[task_id]

    columns: dict[int, list[Node]] = defaultdict(list)
    for record in records[:MAX_NODES]:
        columns[layer(record.task_id)].append(node(record.task_id, record.task_name.rpartition(".")[2], record))
    chords = [[r.task_id for r in records if r.chord_id == callback] for callback in callbacks if callback in by_id]
    return Graph(columns=[columns[i] for i in sorted(columns)], edges=edges, chords=chords)


def render_svg(graph: Graph, highlight: str = "") -> SafeString:
    """The graph as inline SVG; each node links to its task's page. A group, not an image: an
    image may not hold links (axe's nested-interactive, tests/functional/test_accessibility.py)."""
    positions: dict[str, tuple[int, int]] = {}
    tallest = max(len(column) for column in graph.columns)
    height = PAD * 2 + tallest * NODE_H + (tallest - 1) * ROW_GAP
    width = PAD * 2 + len(graph.columns) * NODE_W + (len(graph.columns) - 1) * COL_GAP
    for col, column in enumerate(graph.columns):
        offset = (height - (len(column) * NODE_H + (len(column) - 1) * ROW_GAP)) // 2
        for row, node in enumerate(column):
            positions[node.key] = (PAD + col * (NODE_W + COL_GAP), offset + row * (NODE_H + ROW_GAP))

    parts = [
        format_html(
            '<svg class="workflow-graph" xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" '
            'style="max-width:100%;height:auto" viewBox="0 0 {} {}" role="group" aria-label="Workflow graph">',
            width,
            height,
            width,
            height,
        ),
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#7b8794"/></marker></defs>',
    ]
    for header in graph.chords:
        boxes = [positions[key] for key in header if key in positions]
        if len(boxes) > 1:
            x, top, bottom = boxes[0][0], min(y for _, y in boxes), max(y for _, y in boxes) + NODE_H
            parts.append(
                format_html(
                    '<rect class="chord" x="{}" y="{}" width="{}" height="{}" rx="10" fill="none" '
                    'stroke="#7b8794" stroke-dasharray="4 3"/><text x="{}" y="{}" font-size="10" '
                    'fill="#52606d">chord</text>',
                    x - 8,
                    top - 10,
                    NODE_W + 16,
                    bottom - top + 20,
                    x - 4,
                    top - 12 if top - 12 > 8 else bottom + 20,
                )
            )
    for a, b in graph.edges:
        if a in positions and b in positions:
            (x1, y1), (x2, y2) = positions[a], positions[b]
            sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H // 2, x2, y2 + NODE_H // 2
            mid = (sx + ex) // 2
            parts.append(
                format_html(
                    '<path d="M{},{} C{},{} {},{} {},{}" fill="none" stroke="#9aa5b1" stroke-width="1.5" '
                    'marker-end="url(#arrow)"/>',
                    sx,
                    sy,
                    mid,
                    sy,
                    mid,
                    ey,
                    ex - 2,
                    ey,
                )
            )
    for node in graph.nodes:
        x, y = positions[node.key]
        fill, stroke = COLOURS.get(node.state, COLOURS[states.PENDING])
        detail = [STATE_LABELS.get(node.state, node.state)]
        if node.runtime is not None:
            detail.append(f"{node.runtime:.2f} s" if node.runtime >= 0.01 else f"{node.runtime * 1000:.0f} ms")
        if node.attempts:
            detail.append(f"attempt {node.attempts}" if node.attempts == 1 else f"{node.attempts} attempts")
        box = format_html(
            '<g class="node state-{}" data-step="{}" data-state="{}"><title>{} — {}{}</title>'
            '<rect x="{}" y="{}" width="{}" height="{}" rx="8" fill="{}" stroke="{}" stroke-width="{}"/>'
            '<text x="{}" y="{}" font-size="13" font-weight="600" fill="#1f2933">{}</text>'
            '<text x="{}" y="{}" font-size="11" fill="#3e4c59">{}</text></g>',
            node.state.lower(),
            node.key,
            node.state,
            node.label,
            STATE_LABELS.get(node.state, node.state),
            f" (task {node.task_id})" if node.task_id else "",
            x,
            y,
            NODE_W,
            NODE_H,
            fill,
            stroke,
            3 if node.key == highlight or node.task_id == highlight else 1.5,
            x + 10,
            y + 23,
            node.label[:24],
            x + 10,
            y + 43,
            " · ".join(detail),
        )
        parts.append(format_html('<a href="{}">{}</a>', node.url, box) if node.url else box)
    parts.append("</svg>")
    return mark_safe("".join(str(p) for p in parts))  # every piece above was escaped by format_html
