"""Charts for the task dashboard, drawn server-side as SVG: no JavaScript, no external assets.

Pure functions returning markup. Every value goes through format_html (escaped); only the
assembled SVG is marked safe.
"""

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from . import metrics

WIDTH, HEIGHT = 960, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 36, 46
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
SERIES = (("succeeded", "#2f9e44"), ("failed", "#e03131"))
X_TICKS = 6
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def throughput_chart(buckets: Sequence[metrics.Bucket], *, step: timedelta, chart_id: str, title: str) -> SafeString:
    """Grouped bars, succeeded beside failed, of tasks per minute in each bucket (averaged over `step`).

    Each bar carries data-series, data-start (the bucket's UTC start), data-count and
    data-value (tasks/min) and a <title> tooltip, so the figures stay readable without the picture.
    """
    minutes = step / timedelta(minutes=1)
    zone = timezone.get_current_timezone_name()
    totals = metrics.totals(buckets)
    peak = max((getattr(bucket, name) / minutes for bucket in buckets for name, _ in SERIES), default=0)
    tick, top = _axis(peak)
    slot = PLOT_W / len(buckets)
    end = buckets[-1].start + step

    parts = [
        format_html(
            '<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="chart-{}" viewBox="0 0 {} {}" role="img"'
            ' aria-labelledby="chart-{}-title chart-{}-desc" font-size="12" fill="currentColor">',
            chart_id,
            WIDTH,
            HEIGHT,
            chart_id,
            chart_id,
        ),
        format_html('<title id="chart-{}-title">{}</title>', chart_id, title),
        format_html(
            '<desc id="chart-{}-desc">{} succeeded and {} failed from {} to {} {}.</desc>',
            chart_id,
            totals["succeeded"],
            totals["failed"],
            _clock(buckets[0].start),
            _clock(end),
            zone,
        ),
    ]
    for i in range(round(top / tick) + 1):
        y = TOP + PLOT_H - i * tick / top * PLOT_H
        parts.append(
            format_html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="currentColor" stroke-opacity="{}"/>'
                '<text x="{}" y="{}" text-anchor="end">{}</text>',
                LEFT,
                WIDTH - RIGHT,
                _n(y),
                _n(y),
                "0.5" if i == 0 else "0.12",
                LEFT - 6,
                _n(y + 4),
                _n(i * tick),
            )
        )
    tick_every = step * max(1, len(buckets) // X_TICKS)
    for i, bucket in enumerate(buckets):
        if (bucket.start - _EPOCH) % tick_every:
            continue
        x = LEFT + i * slot
        parts.append(
            format_html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="currentColor" stroke-opacity="0.5"/>'
                '<text x="{}" y="{}" text-anchor="middle">{}</text>',
                _n(x),
                _n(x),
                TOP + PLOT_H,
                TOP + PLOT_H + 5,
                _n(x),
                TOP + PLOT_H + 18,
                _clock(bucket.start),
            )
        )
    bar = slot * 0.4
    for i, bucket in enumerate(buckets):
        for j, (name, colour) in enumerate(SERIES):
            count = getattr(bucket, name)
            rate = count / minutes
            height = rate / top * PLOT_H
            parts.append(
                format_html(
                    '<rect class="bar" data-series="{}" data-start="{}" data-count="{}" data-value="{}"'
                    ' x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>',
                    name,
                    bucket.start.isoformat(),
                    count,
                    _n(rate),
                    _n(LEFT + i * slot + slot * 0.1 + j * bar),
                    _n(TOP + PLOT_H - height),
                    _n(bar),
                    _n(height),
                    colour,
                    _tooltip(bucket, step, name, count, rate, zone),
                )
            )
    x = LEFT
    for name, colour in SERIES:
        label = f"{name} ({totals[name]})"
        parts.append(
            format_html(
                '<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{}</text>',
                x,
                TOP - 24,
                colour,
                x + 14,
                TOP - 15,
                label,
            )
        )
        x += 14 + 7 * len(label) + 20
    parts.append(
        format_html(
            '<text x="{}" y="{}" text-anchor="middle">time ({})</text>'
            '<text transform="translate(14 {}) rotate(-90)" text-anchor="middle">{}</text></svg>',
            LEFT + PLOT_W / 2,
            HEIGHT - 6,
            zone,
            TOP + PLOT_H / 2,
            "tasks/min" if minutes == 1 else f"tasks/min (average over {minutes:g} min)",
        )
    )
    return mark_safe("".join(parts))


def _axis(peak: float) -> tuple[float, float]:
    """A round tick step (1, 2 or 5 × 10ⁿ) for about four gridlines, and the axis top (a multiple of it)."""
    if peak <= 0:
        return 1.0, 1.0
    raw = peak / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    tick = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return tick, tick * math.ceil(peak / tick - 1e-9)


def _tooltip(bucket: metrics.Bucket, step: timedelta, name: str, count: int, rate: float, zone: str) -> str:
    if step == timedelta(minutes=1):
        return f"{_clock(bucket.start)} {zone}: {count} {name}"
    span = f"{_clock(bucket.start)}–{_clock(bucket.start + step)} {zone}"
    return f"{span}: {_n(rate)} tasks/min {name} ({count} tasks)"


def _clock(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%H:%M")


def _n(value: float) -> str:
    """A number with at most two decimals and no trailing zeros: 2, 0.4, 12.35."""
    return f"{value:.2f}".rstrip("0").rstrip(".")
