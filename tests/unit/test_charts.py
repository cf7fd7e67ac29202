"""The dashboard's server-side SVG charts: well-formed, escaped, and honest about missing data."""

from datetime import UTC, date, datetime, timedelta
from xml.etree import ElementTree

from backups.admin import charts
from backups.admin.formatting import human_bytes

SVG = "{http://www.w3.org/2000/svg}"


def _parse(markup: str) -> ElementTree.Element:
    return ElementTree.fromstring(str(markup))


def test_line_chart_draws_one_point_per_value_with_its_value_as_tooltip():
    t0 = datetime(2026, 12, 1, 3, tzinfo=UTC)
    svg = _parse(charts.line_chart([(t0, 1_000_000), (t0 + timedelta(days=1), None), (t0 + timedelta(days=2), 3e6)],
                                   title="size", fmt=human_bytes))
    circles = svg.findall(f"{SVG}circle")
    assert [c.find(f"{SVG}title").text for c in circles] == ["12-01 03:00: 1.00 MB", "12-03 03:00: 3.00 MB"]
    # the largest value touches the top of the plot, zero would sit on the x axis
    assert float(circles[1].get("cy")) < float(circles[0].get("cy"))
    assert "3.00 MB" in [t.text for t in svg.findall(f"{SVG}text")]


def test_charts_escape_text_and_say_when_there_is_no_data():
    svg = _parse(charts.line_chart([], title='<script>alert("x")</script>', fmt=str))
    assert svg.find(f"{SVG}title").text == '<script>alert("x")</script>'  # escaped in the markup, parsed back
    assert [t.text for t in svg.findall(f"{SVG}text")] == ["No data yet"]
    assert "<script>" not in str(charts.sparkline([], title="<script>"))


def test_stacked_bars_stack_each_day_and_skip_zero():
    days = [date(2026, 12, 1), date(2026, 12, 2)]
    svg = _parse(charts.stacked_bars(days, [("succeeded", "ok", [3, 0]), ("failed", "bad", [1, 2])], title="t"))
    rects = svg.findall(f"{SVG}rect")
    assert [(r.get("class"), r.find(f"{SVG}title").text) for r in rects] == [
        ("ok", "12-01: 3 succeeded"), ("bad", "12-01: 1 failed"), ("bad", "12-02: 2 failed")]
    heights = [float(r.get("height")) for r in rects]
    assert heights[0] == 3 * heights[1] and heights[0] + heights[1] == heights[2] * 2


def test_sparkline_of_one_value_is_a_flat_line():
    svg = _parse(charts.sparkline([5.0], title="one"))
    assert svg.find(f"{SVG}polyline").get("points") == "2,14.0 138,14.0"
