"""The analyst's home (the champion model: measures, plots, card, monitoring with its time
series) and the admin's home (who can sign in)."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from fastapi import HTTPException, status
from fastapi.responses import HTMLResponse, Response

from riskstrat.modelling.registry import CHAMPION, ModelNotFoundError
from riskstrat.service.auth import ROLES
from riskstrat.service.deps import RegistryDep, SettingsDep, StoreDep
from riskstrat.service.pages.monitoring_charts import monitoring_charts
from riskstrat.service.pages.session import PAGE_CSP, PageCaller, html, require_role, router

MEASURES = (
    ("AUROC", "validation_auroc"), ("AUPRC", "validation_auprc"),
    ("Brier score", "validation_brier"), ("Observed / expected", "validation_oe"),
    ("Calibration slope", "validation_calibration_slope"),
    ("Share flagged to catch 70% of admissions", "validation_share_flagged_for_70pct_recall"),
)  # fmt: skip
PLOTS = (
    ("calibration", "Calibration: observed against predicted risk, by tenth of risk"),
    ("subgroups", "Fairness: AUROC and observed/expected by subgroup"),
    ("roc", "ROC curve"),
    ("stability", "Stability across the held-out months"),
)
NO_MODEL = "No champion model yet: train one with riskstrat train, then riskstrat promote."


@router.get("/model", response_class=HTMLResponse)
def model_page(
    registry: RegistryDep, settings: SettingsDep, store: StoreDep, caller: PageCaller
) -> Response:
    require_role(caller, "analyst")
    try:
        info = registry.describe(settings.model_name, CHAMPION)
    except ModelNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_MODEL) from None
    monitoring = store.monitoring.latest()
    history = store.monitoring.all()
    return html("model.html", title="Model", caller=caller, info=info, measures=MEASURES,
                plots=PLOTS, monitoring=monitoring, monitoring_history=history,
                monitoring_charts=monitoring_charts(history, model_name=info.name))  # fmt: skip


def _artifact(registry: RegistryDep, settings: SettingsDep, name: str) -> bytes:
    try:
        info = registry.describe(settings.model_name, CHAMPION)
    except ModelNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_MODEL) from None
    if info.run_id is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "The champion has no training run.")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = registry.download_artifacts(info.run_id, name, Path(tmp))
        except Exception:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "The model has no such file.") from None
        return Path(path).read_bytes()


@router.get("/model/plots/{name}.png")
def model_plot(
    registry: RegistryDep,
    settings: SettingsDep,
    caller: PageCaller,
    name: str,
) -> Response:
    if caller.role != "analyst" or name not in {p for p, _ in PLOTS}:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "There is no such plot.")
    return Response(_artifact(registry, settings, f"plots/{name}.png"), media_type="image/png")


@router.get("/model/card", response_class=HTMLResponse)
def model_card(registry: RegistryDep, settings: SettingsDep, caller: PageCaller) -> Response:
    require_role(caller, "analyst")
    response = HTMLResponse(_artifact(registry, settings, "card/card.html"))
    response.headers["Content-Security-Policy"] = PAGE_CSP.replace(
        "img-src 'self'", "img-src 'self' data:"
    )
    return response


@router.get("/admin", response_class=HTMLResponse)
def admin_home(store: StoreDep, caller: PageCaller) -> Response:
    """Who can sign in: users by role, with keys active, expired and revoked. No patients."""
    require_role(caller, "admin")
    now = datetime.now(UTC)
    counts = {role: {"active": 0, "expired": 0, "revoked": 0} for role in ROLES}
    for user in store.users.all():
        state = (
            "revoked"
            if user["revoked_at"] is not None
            else "expired"
            if user["expires_at"] <= now
            else "active"
        )
        counts.setdefault(user["role"], {"active": 0, "expired": 0, "revoked": 0})[state] += 1
    totals = {s: sum(c[s] for c in counts.values()) for s in ("active", "expired", "revoked")}
    return html("admin.html", title="Administration", caller=caller, counts=counts,
                totals=totals, run=store.runs.latest())  # fmt: skip
