"""``/api/v1/models``: the champion model behind the scores."""

from __future__ import annotations

from fastapi import APIRouter

from riskstrat.errors import NotFoundError
from riskstrat.modelling.registry import CHAMPION, ModelNotFoundError
from riskstrat.service.common import API_PREFIX, ERRORS
from riskstrat.service.deps import Analyst, RegistryDep, SettingsDep, StoreDep
from riskstrat.service.schemas import ModelInfo

router = APIRouter(prefix=API_PREFIX, responses=ERRORS)

NO_CHAMPION = "no champion model: run `riskstrat train`"
NO_CHAMPION_HINT = (
    "train a model with `riskstrat train`, then make it the champion with `riskstrat promote`"
)


@router.get("/models/current", response_model=ModelInfo, tags=["models"])
def current_model(
    store: StoreDep, registry: RegistryDep, settings: SettingsDep, caller: Analyst
) -> ModelInfo:
    """The champion model: version, when it was trained, and its held-out metrics. Role:
    analyst."""
    try:
        info = registry.describe(settings.model_name, CHAMPION)
    except ModelNotFoundError:
        raise NotFoundError(NO_CHAMPION, hint=NO_CHAMPION_HINT) from None
    run = store.runs.latest()
    return ModelInfo(
        name=info.name,
        version=info.version,
        aliases=list(info.aliases),
        created_at=info.created_at,
        run_id=info.run_id,
        validation_month=info.tags.get("riskstrat.validation_month"),
        metrics={k: v for k, v in sorted(info.metrics.items())},
        serving_version=run.model_version if run else None,
    )
