"""The monitoring time series on the analyst's model page: inline SVG drawn from the stored
results, one point per monitored month (its latest check) coloured and shaped by status,
confidence intervals as bars, the allowed range shaded; a title, axis labels and the table
as the fallback."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import pytest

from riskstrat.service.pages.monitoring_charts import (
    STATUS_COLOURS,
    monitoring_charts,
    performance_by_month,
    y_scale,
)
from riskstrat.store.monitoring import MonitoringRecord
from tests.support.runs import make_run
from tests.support.world import PCNS, key_for, sign_in

JUN, JUL, AUG = date(2026, 6, 1), date(2026, 7, 1), date(2026, 8, 1)


def _ci(value: float, half: float = 0.03) -> dict:
    return {"value": value, "lo": value - half, "hi": value + half}


def _month(month: date, oe: float, status: str, *, estimable: bool = True) -> dict:
    overall: dict = {"rows": 5000, "events": 400, "estimable": estimable}
    if estimable:
        overall |= {
            "auroc": _ci(0.78, 0.01), "oe": _ci(oe, 0.04), "slope": _ci(1.0, 0.08),
            "ppv_top": _ci(0.31, 0.02), "list_share": 0.05,
            "status": {"auroc": "green", "oe": status, "slope": "green"},
        }  # fmt: skip
    return {"month": month.isoformat(), "model_version": "3", "performance": {"overall": overall}}


def _payload(months: list[dict], latest_month: date, psi: float, psi_status: str) -> dict:
    status = max((m["performance"]["overall"].get("status", {}).get("oe", "unknown")
                  for m in months), key=["unknown", "green", "amber", "red"].index)  # fmt: skip
    return {
        "latest_month": latest_month.isoformat(),
        "months": months,
        "drift": [
            {"name": "age", "kind": "feature", "psi": psi, "status": {"psi": psi_status}},
            {"name": "efi", "kind": "feature", "psi": psi / 4, "status": {"psi": "green"}},
            {"name": "(score)", "kind": "score", "psi": 0.02, "status": {"psi": "green"}},
        ],
        "status": {"oe": status, "feature_psi": psi_status, "overall": status},
        "thresholds": {
            "oe_range": [0.9, 1.1],
            "slope_range": [0.8, 1.25],
            "psi_amber": 0.1,
            "psi_red": 0.25,
            "list_share": 0.05,
        },
    }


#: Two checks: the extract of November follows June and July; December's June, July (again,
#: now amber) and August (red: observed/expected 0.70, its interval wholly below 0.9).
FIRST = _payload([_month(JUN, 1.01, "green"), _month(JUL, 0.99, "green")],
                 date(2026, 11, 1), 0.05, "green")  # fmt: skip
SECOND = _payload([_month(JUN, 1.0, "green"), _month(JUL, 0.93, "amber"),
                   _month(AUG, 0.70, "red")], date(2026, 12, 1), 0.31, "red")  # fmt: skip


def _record(month: date, check: date, payload: dict) -> MonitoringRecord:
    return MonitoringRecord(run_id=month.month, month=month, check_date=check, model_name="m",
                            model_version="3", status=payload["status"]["overall"],
                            payload=payload, computed_at=datetime.now(UTC))  # fmt: skip


HISTORY = sorted(
    [_record(m, date(2026, 11, 1), FIRST) for m in (JUN, JUL)]
    + [_record(m, date(2026, 12, 1), SECOND) for m in (JUN, JUL, AUG)],
    key=lambda r: (r.month, r.check_date),
)


def test_each_month_is_its_latest_check():
    perf = performance_by_month(HISTORY)
    assert list(perf) == ["2026-06", "2026-07", "2026-08"]
    assert perf["2026-07"]["oe"]["value"] == 0.93  # December's check, not November's


def test_the_charts_have_one_point_per_month_coloured_by_status():
    charts = {c.key: c for c in monitoring_charts(HISTORY)}
    assert list(charts) == ["auroc", "oe", "slope", "ppv", "psi"]
    oe = charts["oe"]
    assert [(p.month, p.status) for p in oe.points] == [
        ("2026-06", "green"), ("2026-07", "amber"), ("2026-08", "red"),
    ]  # fmt: skip
    red = oe.points[-1]
    assert red.colour == STATUS_COLOURS["red"] and red.shape == "triangle"
    # pixels: a lower value is lower on the chart (larger y), months left to right, the CI
    # bar around the point, the band between the axis positions of 0.9 and 1.1
    assert oe.points[0].y < oe.points[1].y < red.y
    assert oe.points[0].x < oe.points[1].x < red.x
    assert red.hi is not None and red.lo is not None and red.hi < red.y < red.lo
    assert oe.band is not None and oe.band[0] < oe.points[0].y < oe.band[1]
    assert red.y > oe.band[1]  # 0.70 is below the allowed range
    assert oe.band[2] == "allowed range 0.90 to 1.10"
    assert "red in 2026-08" in oe.description and "O/E 0.70" in oe.description
    # drift sits at the extract's month: November and December
    psi = charts["psi"]
    assert [s.name for s in psi.series] == ["largest feature PSI", "score PSI"]
    assert [(p.month, p.status) for p in psi.series[0].points] == [
        ("2026-11", "green"), ("2026-12", "red"),
    ]  # fmt: skip
    assert psi.series[0].points[1].text == "2026-12: largest feature PSI 0.31 (age), red"
    assert [p.status for p in charts["ppv"].points] == ["unknown"] * 3  # no threshold


def test_a_month_too_small_to_estimate_has_no_point_and_no_history_no_chart():
    small = _payload([_month(JUN, 1.0, "green"), _month(JUL, 1.0, "green", estimable=False)],
                     date(2026, 11, 1), 0.05, "green")  # fmt: skip
    records = [_record(m, date(2026, 11, 1), small) for m in (JUN, JUL)]
    oe = {c.key: c for c in monitoring_charts(records)}["oe"]
    assert [p.month for p in oe.points] == ["2026-06"]
    assert monitoring_charts([]) == []
    assert monitoring_charts(records, model_name="another_model") == []  # the champion's only


def test_the_thresholds_stored_with_the_result_set_the_band():
    payload = _payload([_month(JUN, 1.0, "green")], date(2026, 11, 1), 0.05, "green")
    payload["thresholds"]["oe_range"] = [0.8, 1.2]
    oe = {c.key: c for c in monitoring_charts([_record(JUN, date(2026, 11, 1), payload)])}["oe"]
    assert oe.band is not None and oe.band[2] == "allowed range 0.80 to 1.20"
    del payload["thresholds"]  # stored before thresholds were: the spec's defaults
    oe = {c.key: c for c in monitoring_charts([_record(JUN, date(2026, 11, 1), payload)])}["oe"]
    assert oe.band is not None and oe.band[2] == "allowed range 0.90 to 1.10"


@pytest.mark.parametrize(
    ("values", "ticks"),
    [([0.72, 1.1], [0.7, 0.8, 0.9, 1.0, 1.1, 1.2]), ([0.02, 0.31], [0.0, 0.1, 0.2, 0.3, 0.4]),
     ([0.5, 0.5], [0.46, 0.48, 0.5, 0.52, 0.54])],
)  # fmt: skip
def test_axis_ticks_are_round_and_cover_the_values(values, ticks):
    low, high, found = y_scale(values, floor=0.0 if ticks[0] == 0 else None)
    assert found == pytest.approx(ticks)
    assert low <= min(values) and high >= max(values)


# ---------------------------------------------------------------------------- the page


def _fake_champion(served, monkeypatch) -> None:
    from riskstrat.modelling.registry import ModelVersionInfo

    info = ModelVersionInfo(name="m", version="3", aliases=("champion",), run_id=None,
                            created_at=datetime(2026, 5, 1, tzinfo=UTC),
                            metrics={"validation_auroc": 0.8}, tags={})  # fmt: skip
    monkeypatch.setattr(served["client"].app.state.registry, "describe", lambda *a, **k: info)


def _figure(page: str, key: str) -> str:
    found = re.search(rf'<figure class="chart" id="chart-{key}">(.*?)</figure>', page, re.S)
    assert found, f"no {key} chart on the page"
    return found.group(1)


def test_the_model_page_plots_each_monitored_month(served, monkeypatch):
    client = served["client"]
    store = client.app.state.store
    _fake_champion(served, monkeypatch)
    sign_in(client, key_for("analyst", PCNS[0]))
    assert 'class="chart"' not in client.get("/model").text  # nothing monitored yet
    runs = {}
    for month, seed in ((JUN, 1), (JUL, 2), (AUG, 3)):
        scores, cohorts = make_run(30, seed)
        runs[month] = store.runs.publish_run(
            month=month, extract_date=month, model_name="m", model_version="3", scores=scores,
            cohorts=cohorts, n_type1_opt_outs_excluded=0, started_at=datetime.now(UTC),
            details={},
        )  # fmt: skip
    for check, payload, months in ((date(2026, 11, 1), FIRST, (JUN, JUL)),
                                   (date(2026, 12, 1), SECOND, (JUN, JUL, AUG))):  # fmt: skip
        for month in months:
            store.monitoring.replace(
                run_id=runs[month], month=month, check_date=check, model_name="m",
                model_version="3", status=payload["status"]["overall"], payload=payload,
            )  # fmt: skip
    page = client.get("/model").text
    oe = _figure(page, "oe")
    # one point per month (June and July were checked twice: the latest check is drawn)
    assert re.findall(r'data-month="([0-9-]+)"', oe) == ["2026-06", "2026-07", "2026-08"]
    red = re.search(r'<g class="point status-red" data-month="2026-08">(.*?)</g>', oe, re.S)
    assert red, "August is not marked red"
    assert "<polygon" in red.group(1) and STATUS_COLOURS["red"] in red.group(1)
    assert "<title>2026-08: O/E 0.70 (95% CI 0.66 to 0.74), red</title>" in red.group(1)
    assert oe.count('class="point status-green"') == 1 and oe.count("status-amber") == 1
    # accessible: a title and description the image is labelled by, both axes labelled
    assert 'role="img" aria-labelledby="chart-oe-title chart-oe-desc"' in oe
    assert '<title id="chart-oe-title">Observed / expected (calibration in the large)</title>' in oe
    assert ">Month</text>" in oe and ">Observed / expected</text>" in oe
    assert 'class="allowed"' in oe and "allowed range 0.90 to 1.10" in oe
    for key in ("auroc", "slope", "ppv"):
        assert len(re.findall(r'data-month="', _figure(page, key))) == 3, key
    psi = _figure(page, "psi")
    assert re.findall(r'data-month="([0-9-]+)"', psi) == ["2026-11", "2026-12"] * 2
    assert '<g class="point status-red" data-month="2026-12">' in psi
    # the table stays as the fallback: every stored check of every month
    table = page[page.index('id="monitoring-months"') :]
    assert table.count("<tr><td>2026-07</td>") == 2 and "0.70 (0.66–0.74)" in table
    assert "Monitoring is red" in page  # the banner, as before


def test_the_model_page_shows_omop_mapping_coverage_or_says_it_does_not_apply(served, monkeypatch):
    from riskstrat.modelling.spec import MonitoringConfig
    from riskstrat.monitoring.coverage import coverage_checks

    client = served["client"]
    store = client.app.state.store
    _fake_champion(served, monkeypatch)
    sign_in(client, key_for("analyst", PCNS[0]))
    reference = {"drug_exposure": {"rows_read": 40_000, "mapped": 38_000, "coverage": 0.95}}
    latest = {"drug_exposure": {"rows_read": 41_000, "mapped": 36_080, "coverage": 0.88}}
    payload = _payload([_month(JUN, 1.0, "green")], date(2026, 11, 1), 0.05, "green")
    payload["mapping_coverage"] = coverage_checks(
        reference, latest, MonitoringConfig(), omop=True, reference_source="the training extract"
    )
    store.monitoring.replace(run_id=served["run_id"], month=JUN, check_date=date(2026, 11, 1),
                             model_name="m", model_version="3", status="red",
                             payload=payload)  # fmt: skip
    page = client.get("/model").text
    table = page[page.index('id="monitoring-coverage"') :]
    table = table[: table.index("</table>")]
    assert "against the training extract" in table and "red above 5)" in table
    assert '<td>drug_exposure</td><td class="num">41,000</td>' in table
    assert '88.0%</td><td class="num">95.0%</td><td class="num">7.0</td>' in table
    assert '<td class="status-red">red</td>' in table
    payload["mapping_coverage"] = coverage_checks(None, None, MonitoringConfig(), omop=False)
    store.monitoring.replace(run_id=served["run_id"], month=JUN, check_date=date(2026, 11, 1),
                             model_name="m", model_version="3", status="green",
                             payload=payload)  # fmt: skip
    page = client.get("/model").text
    assert "Mapping coverage: not an OMOP import" in page
    assert 'id="monitoring-coverage"' not in page
