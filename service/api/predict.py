"""POST /v1/predict: score one text or a batch; nothing is stored."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from service.api.deps import BundleDep, MetricsDep, SettingsDep, require
from service.auth import Principal
from service.intake import check_batch, prepare_predict_items
from service.schemas import ErrorResponse, PredictBatchResponse, PredictItem, PredictRequest, PredictResponse

router = APIRouter(prefix="/v1", tags=["predict"])
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 413, 422, 503)}


@router.post("/predict", response_model=PredictResponse | PredictBatchResponse, responses=ERRORS,
             summary="Predict category, cause and dispute risk for one text (`text`) or a batch (`items`)")
def predict(body: PredictRequest, bundle: BundleDep, settings: SettingsDep, metrics: MetricsDep,
            _: Annotated[Principal, Depends(require("predict"))]) -> PredictResponse | PredictBatchResponse:
    if body.items is not None:
        check_batch(len(body.items), settings.predict_batch_max, "items")
        texts, fields = prepare_predict_items(body.items, settings, "items")
    else:
        single = PredictItem(text=body.text or "", channel=body.channel, repeat_count=body.repeat_count,
                             amount=body.amount, product=body.product)
        texts, fields = prepare_predict_items([single], settings, "")
    predictions = bundle.predict(texts, fields, explain=body.explain, already_clean=True)
    metrics.observe_predictions("predict", predictions)
    if body.items is not None:
        return PredictBatchResponse.model_validate({"model_version": bundle.version, "predictions": predictions})
    return PredictResponse.model_validate({"model_version": bundle.version, "prediction": predictions[0]})
