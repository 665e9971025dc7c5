"""The benchmark's output: each figure beside its baseline, as a table, JSON and an SVG chart."""

import json
import xml.etree.ElementTree as ET

from benchmarks.report import Figure, table, write_chart, write_json

MACHINE = {"cores": 2, "database": "PostgreSQL 15", "mode": "quick"}
FIGURES = [
    Figure(
        "throughput", "orders per second", 70.0, 35.0, "/s", "stock canvas", "≥ 2.0×", lambda f: f.ratio >= 2, "higher"
    ),
    Figure("latency", "p95", 0.04, 0.02, "s", "stock canvas", "≤ 1 s", lambda f: f.value <= 1),
    Figure("database", "statements per checkout", 10, None, "", "—"),
]


def test_the_table_shows_each_figure_beside_its_baseline_with_the_ratio_and_the_target_met_or_not():
    text = table(FIGURES, MACHINE)

    rows = {line.split("  ")[0]: line for line in text.splitlines()}
    assert "70.0 /s" in rows["throughput: orders per second"] and "35.0 /s" in rows["throughput: orders per second"]
    assert "2.00× better" in rows["throughput: orders per second"]
    assert "≥ 2.0× ✓" in rows["throughput: orders per second"]
    assert "40.0 ms" in rows["latency: p95"] and "20.0 ms" in rows["latency: p95"]
    assert "2.00× worse" in rows["latency: p95"]  # a time: lower is better
    assert "—" in rows["database: statements per checkout"]
    assert text.endswith("machine: cores 2, database PostgreSQL 15, mode quick")


def test_the_json_has_value_baseline_ratio_and_unit_for_each_figure(tmp_path):
    path = tmp_path / "bench.json"

    write_json(path, FIGURES, MACHINE)

    document = json.loads(path.read_text())
    assert document["machine"] == MACHINE
    first = document["figures"][0]
    assert (first["value"], first["baseline"], first["ratio"], first["unit"], first["met"]) == (
        70.0,
        35.0,
        2.0,
        "/s",
        True,
    )
    assert document["figures"][2]["ratio"] is None and document["figures"][2]["met"] is None


def test_the_chart_draws_two_bars_per_figure_with_a_baseline_scaled_to_the_larger(tmp_path):
    path = tmp_path / "bench.svg"

    write_chart(path, FIGURES, MACHINE)

    svg = ET.parse(path).getroot()
    bars = [rect for rect in svg.iter("{http://www.w3.org/2000/svg}rect") if rect.get("height") == "14"]
    assert len(bars) == 4  # two figures have a baseline
    ours, baseline = float(bars[0].get("width")), float(bars[1].get("width"))
    assert ours == 420 and baseline == 210  # the larger fills the bar, the other in proportion
    assert "PostgreSQL 15" in path.read_text()


def test_a_figure_of_several_rounds_shows_their_median_with_the_min_and_max_everywhere(tmp_path):
    figure = Figure(
        "throughput", "orders per second", 70.0, 35.0, "/s", "stock", rounds=(65.0, 70.0, 80.0), baseline_rounds=(35.0,)
    )

    row = table([figure], MACHINE).splitlines()[2]
    write_json(tmp_path / "bench.json", [figure], MACHINE)
    write_chart(tmp_path / "bench.svg", [figure], MACHINE)

    assert "70.0 /s (65.0 /s–80.0 /s)" in row and "35.0 /s  " in row  # one round: no spread
    saved = json.loads((tmp_path / "bench.json").read_text())["figures"][0]
    assert (saved["rounds"], saved["baseline_rounds"]) == ([65.0, 70.0, 80.0], [35.0])
    assert "(65.0 /s–80.0 /s)" in (tmp_path / "bench.svg").read_text()


def test_the_chart_keeps_long_labels_off_the_bars_and_long_values_inside_its_width(tmp_path):
    """The chart of 2026-12-06 ran long labels into their bars and cut off values with wide spreads."""
    long = Figure(
        "database",
        "write transactions per order workflow, the demo payment provider's ledger left out",
        356.2,
        46.1,
        "ms",
        "stock",
        rounds=(614.5, 356.2, 50.3),
        baseline_rounds=(44.8, 46.1, 58.5),
    )
    path = tmp_path / "bench.svg"

    write_chart(path, [long, FIGURES[0]], MACHINE)

    ns = "{http://www.w3.org/2000/svg}"
    svg = ET.parse(path).getroot()
    width = float(svg.get("width"))
    texts = {text.text: text for text in svg.iter(f"{ns}text")}
    bars = [rect for rect in svg.iter(f"{ns}rect") if rect.get("height") == "14"]
    label = texts[f"database: {long.name}"]
    assert float(label.get("y")) <= float(bars[0].get("y"))  # above its bars, not across them
    value = texts["356.2 ms (50.3 ms–614.5 ms)"]
    assert float(value.get("x")) + 7 * len(value.text) <= width  # 7 px a character of 12 px sans-serif
