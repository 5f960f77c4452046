"""Time-series charts of the champion's monitoring on the analyst page, as inline SVG.

The geometry (scales, ticks, points, error bars, the allowed band) is computed here from the
stored monitoring results; ``templates/_monitoring_charts.html`` draws it. No JavaScript, no
image files, no plotting library in the service: the page stays one server-rendered
document under its Content-Security-Policy, and the charts print and scale with it.

One point per monitored month: the latest check of that month (a month is checked again by
every later extract). Performance (AUROC, observed/expected, calibration slope, PPV of the top
list) is placed at the month that was scored; drift (the largest feature PSI and the score's)
at the month of the extract it was measured on. A point's colour is the status its check was
given, and its shape says the same for readers who cannot tell the colours apart; the
numbers are in the table under the charts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from riskstrat.modelling.spec import MonitoringConfig
from riskstrat.store.monitoring import MonitoringRecord

#: NHS identity colours; the amber is the darker orange so it reads on white.
STATUS_COLOURS = {"green": "#007f3b", "amber": "#ed8b00", "red": "#d5281b", "unknown": "#768692"}
#: Each status's marker: the same information as the colour, for colour-blind readers.
STATUS_SHAPES = {"green": "circle", "amber": "square", "red": "triangle", "unknown": "ring"}
STATUS_WORDS = {"green": "green", "amber": "amber", "red": "red", "unknown": "not judged"}
WIDTH, HEIGHT = 640, 264
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 46
SERIES_DASHES = ("", "6 4")


@dataclass(frozen=True)
class ChartPoint:
    """One month's marker: pixel position, its CI's pixel ends, status and words."""

    month: str
    series: str
    x: float
    y: float
    lo: float | None
    hi: float | None
    status: str
    text: str

    @property
    def colour(self) -> str:
        return STATUS_COLOURS.get(self.status, STATUS_COLOURS["unknown"])

    @property
    def shape(self) -> str:
        return STATUS_SHAPES.get(self.status, "ring")


@dataclass(frozen=True)
class Series:
    name: str
    dash: str
    path: str
    points: list[ChartPoint]


@dataclass(frozen=True)
class Chart:
    """Everything the template needs to draw one chart (pixels in a WIDTH x HEIGHT box)."""

    key: str
    title: str
    y_label: str
    description: str
    series: list[Series]
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    #: The allowed range, shaded: (pixel top, pixel bottom, words).
    band: tuple[float, float, str] | None = None
    #: Threshold lines: (pixel y, words).
    lines: list[tuple[float, str]] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    right: int = WIDTH - RIGHT
    bottom: int = HEIGHT - BOTTOM

    @property
    def points(self) -> list[ChartPoint]:
        return [p for s in self.series for p in s.points]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _month(value: str | date) -> str:
    return (value.isoformat() if isinstance(value, date) else str(value))[:7]


def _month_index(month: str) -> int:
    return int(month[:4]) * 12 + int(month[5:7]) - 1


def thresholds_of(history: Sequence[MonitoringRecord]) -> MonitoringConfig:
    """The thresholds the newest result was judged against (the spec's defaults for results
    stored before the thresholds were)."""
    stored: Mapping[str, Any] = history[-1].payload.get("thresholds", {}) if history else {}
    known = {k: v for k, v in stored.items() if k in MonitoringConfig.model_fields}
    try:
        return MonitoringConfig.model_validate(known)
    except ValueError:
        return MonitoringConfig()


def performance_by_month(history: Sequence[MonitoringRecord]) -> dict[str, dict[str, Any]]:
    """``{YYYY-MM: overall performance}`` of each monitored month's latest check."""
    newest: dict[str, tuple[date, dict[str, Any]]] = {}
    for record in history:
        month = _month(record.month)
        for entry in record.payload.get("months", []):
            if _month(entry.get("month", "")) != month:
                continue
            overall = (entry.get("performance") or {}).get("overall")
            if overall is not None and (
                month not in newest or record.check_date >= newest[month][0]
            ):
                newest[month] = (record.check_date, overall)
    return {m: newest[m][1] for m in sorted(newest)}


def drift_by_month(history: Sequence[MonitoringRecord]) -> dict[str, dict[str, Any]]:
    """``{YYYY-MM of the extract: {"feature": row, "score": row}}``: the largest feature PSI
    and the score's PSI of each extract month's latest check."""
    newest: dict[str, tuple[date, dict[str, Any]]] = {}
    for record in history:
        month = _month(record.payload.get("latest_month") or record.check_date)
        if month in newest and record.check_date < newest[month][0]:
            continue
        drift = [d for d in record.payload.get("drift", []) if _finite(d.get("psi"))]
        features = [d for d in drift if d.get("kind") == "feature"]
        scores = [d for d in drift if d.get("kind") == "score"]
        found: dict[str, Any] = {}
        if features:
            found["feature"] = max(features, key=lambda d: d["psi"])
        if scores:
            found["score"] = scores[0]
        if found:
            newest[month] = (record.check_date, found)
    return {m: newest[m][1] for m in sorted(newest)}


def _nice_step(span: float, count: int) -> float:
    raw = span / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * power:
            return float(m * power)
    return float(10 * power)


def _decimals(step: float) -> int:
    decimals = max(0, -math.floor(math.log10(step)))
    return decimals + (1 if round(step / 10**-decimals, 6) % 1 else 0)


def y_scale(
    values: Sequence[float], *, floor: float | None = None, count: int = 5
) -> tuple[float, float, list[float]]:
    """(low, high, ticks) of an axis that holds ``values`` (and ``floor``, its lowest value
    when given): round ticks, the axis running from the first to the last."""
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        pad = abs(hi) * 0.05 or 0.01
        lo, hi = lo - pad, hi + pad
    else:  # a little room, so no bar ends on the frame
        lo, hi = lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo)
    if floor is not None:  # e.g. 0 for a share or a PSI: never below it, and always shown
        lo = floor
    step = _nice_step(hi - lo, count)
    low = round(math.floor(lo / step + 1e-9) * step, 10)
    high = round(math.ceil(hi / step - 1e-9) * step, 10)
    ticks = [round(low + i * step, 10) for i in range(round((high - low) / step) + 1)]
    return low, high, ticks


@dataclass(frozen=True)
class _Axes:
    months: list[str]
    low: float
    high: float
    percent: bool
    decimals: int

    def x(self, month: str) -> float:
        first = _month_index(self.months[0])
        n = _month_index(self.months[-1]) - first + 1
        width = (WIDTH - RIGHT - LEFT) / n
        return round(LEFT + (_month_index(month) - first + 0.5) * width, 1)

    def y(self, value: float) -> float:
        span = self.high - self.low
        return round(TOP + (self.high - value) / span * (HEIGHT - BOTTOM - TOP), 1)

    def label(self, value: float) -> str:
        if self.percent:
            return f"{100 * value:.{max(self.decimals - 2, 0)}f}%"
        return f"{value:.{self.decimals}f}"

    def x_ticks(self) -> list[tuple[float, str]]:
        first, last = _month_index(self.months[0]), _month_index(self.months[-1])
        every = max(1, math.ceil((last - first + 1) / 12))
        return [
            (self.x(f"{i // 12:04d}-{i % 12 + 1:02d}"), f"{i // 12:04d}-{i % 12 + 1:02d}")
            for i in range(first, last + 1, every)
        ]


def _number(value: Any) -> float | None:
    return float(value) if _finite(value) else None


def _ci(block: Any) -> tuple[float | None, float | None, float | None]:
    """(value, lo, hi) of a stored CI, None where missing or not finite."""
    if not isinstance(block, Mapping):
        return None, None, None
    return _number(block.get("value")), _number(block.get("lo")), _number(block.get("hi"))


@dataclass(frozen=True)
class _Raw:
    month: str
    value: float
    lo: float | None
    hi: float | None
    status: str
    #: Said after the value in the point's words (e.g. which feature).
    what: str = ""


def _chart(
    key: str,
    title: str,
    y_label: str,
    months: list[str],
    series: list[tuple[str, list[_Raw]]],
    *,
    band: tuple[float, float] | None = None,
    band_words: str | None = None,
    lines: Sequence[tuple[float, str]] = (),
    floor: float | None = None,
    percent: bool = False,
    digits: int = 2,
) -> Chart:
    values = [v for _, raws in series for r in raws for v in (r.value, r.lo, r.hi) if v is not None]
    values += [*(band or ()), *(y for y, _ in lines)]
    low, high, ticks = y_scale(values, floor=floor)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    axes = _Axes(months, low, high, percent, _decimals(step))

    def fmt(value: float) -> str:
        return f"{100 * value:.{digits}f}%" if percent else f"{value:.{digits}f}"

    drawn: list[Series] = []
    told: list[str] = []
    for i, (name, raws) in enumerate(series):
        points = []
        for r in raws:
            ci = (
                f" (95% CI {fmt(r.lo)} to {fmt(r.hi)})"
                if r.lo is not None and r.hi is not None
                else ""
            )
            what = f" ({r.what})" if r.what else ""
            status = STATUS_WORDS.get(r.status, r.status)
            text = f"{r.month}: {name} {fmt(r.value)}{what}{ci}, {status}"
            points.append(
                ChartPoint(
                    month=r.month,
                    series=name,
                    x=axes.x(r.month),
                    y=axes.y(r.value),
                    lo=axes.y(r.lo) if r.lo is not None else None,
                    hi=axes.y(r.hi) if r.hi is not None else None,
                    status=r.status,
                    text=text,
                )
            )
        path = " ".join(f"{'M' if j == 0 else 'L'}{p.x},{p.y}" for j, p in enumerate(points))
        drawn.append(Series(name, SERIES_DASHES[i % len(SERIES_DASHES)], path, points))
        if points:
            last = points[-1]
            red = [p.month for p in points if p.status == "red"]
            told.append(
                f"{name}: {len(points)} month(s), latest {last.text.split(': ', 1)[1]}"
                + (f"; red in {', '.join(red)}" if red else "")
            )
    shaded = None
    if band is not None:
        said = band_words or f"allowed range {fmt(band[0])} to {fmt(band[1])}"
        shaded = (axes.y(band[1]), axes.y(band[0]), said)
        told.append(shaded[2])
    description = f"{title}, by month. " + ". ".join(told) + "." if told else title
    return Chart(
        key=key,
        title=title,
        y_label=y_label,
        description=description,
        series=drawn,
        x_ticks=axes.x_ticks(),
        y_ticks=[(axes.y(t), axes.label(t)) for t in ticks],
        band=shaded,
        lines=[(axes.y(y), text) for y, text in lines],
    )


def monitoring_charts(
    history: Sequence[MonitoringRecord], *, model_name: str | None = None
) -> list[Chart]:
    """The charts of the stored monitoring history (oldest first, as
    ``store.monitoring.all()`` returns it), of ``model_name``'s results only when given;
    empty when no month has a point."""
    if model_name is not None:
        history = [r for r in history if r.model_name == model_name]
    config = thresholds_of(history)
    perf = {m: p for m, p in performance_by_month(history).items() if p.get("estimable")}
    drift = drift_by_month(history)
    months = sorted(set(perf) | set(drift))
    if not months:
        return []
    months = [months[0], months[-1]]  # the axis runs from the first to the last month

    def raws(metric: str, status_key: str | None) -> list[_Raw]:
        out = []
        for month, block in perf.items():
            value, lo, hi = _ci(block.get(metric))
            if value is None:
                continue
            status = (
                (block.get("status") or {}).get(status_key, "unknown") if status_key else "unknown"
            )
            out.append(_Raw(month, value, lo, hi, str(status)))
        return out

    share = f"{100 * config.list_share:g}%"
    charts: list[Chart] = []
    if perf:
        charts += [
            _chart(
                "auroc",
                "AUROC of the published risks on matured outcomes",
                "AUROC",
                months,
                [("AUROC", raws("auroc", "auroc"))],
                digits=3,
            ),
            _chart(
                "oe",
                "Observed / expected (calibration in the large)",
                "Observed / expected",
                months,
                [("O/E", raws("oe", "oe"))],
                band=config.oe_range,
                lines=[(1.0, "")],
            ),
            _chart(
                "slope",
                "Calibration slope",
                "Calibration slope",
                months,
                [("slope", raws("slope", "slope"))],
                band=config.slope_range,
                lines=[(1.0, "")],
            ),
            _chart(
                "ppv",
                f"PPV of the top {share} list (not judged: no threshold)",
                f"PPV, top {share}",
                months,
                [("PPV", raws("ppv_top", None))],
                floor=0.0,
                percent=True,
                digits=1,
            ),
        ]
    if drift:
        series = []
        for kind, name in (("feature", "largest feature PSI"), ("score", "score PSI")):
            rows = [(m, d[kind]) for m, d in drift.items() if kind in d]
            raws_psi = [
                _Raw(m, float(r["psi"]), None, None,
                     str((r.get("status") or {}).get("psi", "unknown")),
                     what=str(r.get("name", "")) if kind == "feature" else "")
                for m, r in rows
            ]  # fmt: skip
            series.append((name, raws_psi))
        charts.append(
            _chart(
                "psi",
                "Population stability index against the training window",
                "PSI",
                months,
                series,
                band=(0.0, config.psi_amber),
                band_words=f"green below {config.psi_amber:g}",
                lines=[(config.psi_red, f"red above {config.psi_red:g}")],
                floor=0.0,
            )
        )
    return charts
