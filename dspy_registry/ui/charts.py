"""Line charts as inline SVG, drawn in Python: no plotting library, no JavaScript, nothing fetched at view time.

Pure: series of numbers in, an SVG string out (every text escaped). One chart puts every version on the x axis in
order, draws one circle per version that has a value in each series, and marks what each environment holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 52, 30  # the top band holds the title, legend and environment labels
COLORS = ("#2563eb", "#d97706", "#059669", "#9333ea")


@dataclass(frozen=True)
class Series:
    label: str
    values: tuple[float | None, ...]  # one per version, None where the version has no value


def _number(value: float, unit: str) -> str:
    if unit == "$":
        return f"${value:.4g}"
    return f"{value:.3g}{unit}"


def line_chart(
    title: str,
    versions: Sequence[str],
    series: Sequence[Series],
    marks: Mapping[str, Sequence[str]],
    unit: str = "",
) -> str:
    """An SVG line chart of `series` over `versions`; `marks` maps a version to the environments holding it."""
    values = [v for s in series for v in s.values if v is not None]
    head = (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">'
        f'<text class="chart-title" x="{LEFT}" y="16">{escape(title)}</text>'
    )
    if not values:
        return head + f'<text class="empty" x="{LEFT}" y="{HEIGHT // 2}">no values recorded yet</text></svg>'
    low, high = min(values), max(values)
    if high == low:
        low, high = low - (abs(low) * 0.1 or 1), high + (abs(high) * 0.1 or 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(versions) - 1, 1)

    def x(i: int) -> float:
        return LEFT + (i * step if len(versions) > 1 else plot_w / 2)

    def y(value: float) -> float:
        return TOP + plot_h - (value - low) / (high - low) * plot_h

    parts = [head]
    for value in (low, (low + high) / 2, high):
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}"/>'
            f'<text class="axis" x="{LEFT - 4}" y="{y(value) + 4:.1f}" text-anchor="end">'
            f"{escape(_number(value, unit))}</text>"
        )
    label_every = max(1, len(versions) // 8)  # at most ~8 version names under the axis stay readable
    for i, version in enumerate(versions):
        if i % label_every == 0 or i == len(versions) - 1:
            parts.append(
                f'<text class="axis" x="{x(i):.1f}" y="{HEIGHT - 10}" text-anchor="middle">{escape(version)}</text>'
            )
        anchor = "start" if i == 0 and len(versions) > 1 else "end" if i == len(versions) - 1 else "middle"
        for env in marks.get(version, ()):
            parts.append(
                f'<line class="env-mark" x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{TOP}" y2="{TOP + plot_h}"/>'
                f'<text class="env-label" x="{x(i):.1f}" y="{TOP - 4 - 12 * list(marks[version]).index(env)}" '
                f'text-anchor="{anchor}">{escape(env)}</text>'
            )
    for n, s in enumerate(series):
        color = COLORS[n % len(COLORS)]
        points = [(x(i), y(v), versions[i], v) for i, v in enumerate(s.values) if v is not None]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in points)
        parts.append(f'<polyline class="line" fill="none" stroke="{color}" points="{path}"/>')
        radius = 3 if len(points) <= 200 else 1.5
        for px, py, version, value in points:
            parts.append(
                f'<circle class="point" data-series="{escape(s.label)}" data-version="{escape(version)}" '
                f'cx="{px:.1f}" cy="{py:.1f}" r="{radius}" fill="{color}">'
                f"<title>{escape(version)} {escape(s.label)}: {escape(_number(value, unit))}</title></circle>"
            )
        parts.append(
            f'<text class="legend" x="{WIDTH - RIGHT - 4 - 90 * n}" y="16" text-anchor="end" fill="{color}">'
            f"{escape(s.label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
