"""The benchmark's figures, each with its baseline from the same run: a table, JSON and an SVG chart."""

import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    """One measured value next to its baseline. `ratio` is value ÷ baseline; the table says it as
    "N× better" the way the figure improves (`better`: "higher" for a rate, "lower" for a time
    or a count); `target` says whether it meets what the shop promises."""

    group: str
    name: str
    value: float
    baseline: float | None
    unit: str
    baseline_label: str
    target_text: str = ""
    target: Callable[["Figure"], bool] | None = field(default=None, compare=False, repr=False)
    better: str = "lower"
    # Each round's value, when the figure is their median (the table shows their min–max).
    rounds: tuple[float, ...] = ()
    baseline_rounds: tuple[float, ...] = ()

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.baseline else None

    @property
    def met(self) -> bool | None:
        return self.target(self) if self.target else None

    def as_dict(self) -> dict:
        return {
            "group": self.group,
            "name": self.name,
            "value": round(self.value, 4),
            "baseline": None if self.baseline is None else round(self.baseline, 4),
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "unit": self.unit,
            "better": self.better,
            "baseline_is": self.baseline_label,
            "target": self.target_text,
            "met": self.met,
            "rounds": [round(value, 4) for value in self.rounds],
            "baseline_rounds": [round(value, 4) for value in self.baseline_rounds],
        }


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s" and value < 1:
        return f"{value * 1000:.1f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:,.1f} {unit}" if value < 1000 else f"{value:,.0f} {unit}"


def _spread(value: float | None, rounds: tuple[float, ...], unit: str) -> str:
    """The value, and the min–max of the rounds it is the median of."""
    if len(rounds) < 2:
        return _number(value, unit)
    return f"{_number(value, unit)} ({_number(min(rounds), unit)}–{_number(max(rounds), unit)})"


def _gain(figure: Figure) -> str:
    """How much better (or worse) than its baseline, the way the figure improves."""
    if figure.ratio is None:
        return ""
    gain = figure.ratio if figure.better == "higher" else 1 / figure.ratio if figure.ratio else float("inf")
    if abs(gain - 1) < 0.005:
        return "same"
    return f"{gain:.2f}× better" if gain > 1 else f"{1 / gain:.2f}× worse"


def table(figures: list[Figure], machine: dict) -> str:
    header = ("figure", "ours", "baseline", "vs baseline", "target", "baseline is")
    rows = [header]
    for figure in figures:
        ratio = _gain(figure)
        target = figure.target_text + ("" if figure.met is None else (" ✓" if figure.met else " ✗"))
        rows.append(
            (
                f"{figure.group}: {figure.name}",
                _spread(figure.value, figure.rounds, figure.unit),
                _spread(figure.baseline, figure.baseline_rounds, figure.unit),
                ratio,
                target,
                figure.baseline_label,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append("")
    lines.append("machine: " + ", ".join(f"{key} {value}" for key, value in machine.items()))
    return "\n".join(lines)


def write_json(path: Path, figures: list[Figure], machine: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": machine, "figures": [figure.as_dict() for figure in figures]}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def write_chart(path: Path, figures: list[Figure], machine: dict) -> None:
    """Each figure as a pair of bars, ours and its baseline, scaled to the larger of the two, under
    its label (a long label never runs into the bars), the chart as wide as its longest value
    (test_the_chart_keeps_long_labels_off_the_bars_and_long_values_inside_its_width)."""
    paired = [figure for figure in figures if figure.baseline]
    values = [  # ours and the baseline: each value with its text
        [
            (figure.value, _spread(figure.value, figure.rounds, figure.unit)),
            (figure.baseline, _spread(figure.baseline, figure.baseline_rounds, figure.unit)),
        ]
        for figure in paired
    ]
    row, left, bar_width, char_width = 56, 10, 420, 7  # about 7 px a character of 12 px sans-serif
    described = html.escape(", ".join(f"{key} {value}" for key, value in machine.items()))
    text_width = max((len(text) for pair in values for _, text in pair), default=0) * char_width
    lines = [f"{figure.group}: {figure.name}" for figure in paired] + [described]
    width = left + max(bar_width + 5 + text_width, max(len(line) for line in lines) * char_width) + left
    height = 70 + row * len(paired) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        '<text x="10" y="22" font-size="15" font-weight="bold">Celery shop: each figure next to its baseline '
        "(same run)</text>",
        '<rect x="10" y="34" width="12" height="10" fill="#2f6fb0"/><text x="27" y="43">ours</text>',
        '<rect x="70" y="34" width="12" height="10" fill="#c4c4c4"/><text x="87" y="43">baseline</text>',
    ]
    for index, (figure, pair) in enumerate(zip(paired, values, strict=True)):
        y = 66 + index * row
        parts.append(f'<text x="{left}" y="{y}">{html.escape(f"{figure.group}: {figure.name}")}</text>')
        top = max(figure.value, figure.baseline) or 1
        for offset, ((value, text), colour) in enumerate(zip(pair, ("#2f6fb0", "#c4c4c4"), strict=True)):
            bar = max(1.0, bar_width * value / top)
            bar_y = y + 6 + offset * 17
            parts.append(
                f'<rect x="{left}" y="{bar_y}" width="{bar:.1f}" height="14" fill="{colour}"/>'
                f'<text x="{left + bar + 5:.1f}" y="{bar_y + 11}">{html.escape(text)}</text>'
            )
    parts.append(f'<text x="10" y="{height - 14}" fill="#555">{described}</text>')
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")
