"""``/v1/models``: the base models, the fine-tuned models and their checkpoints."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..deps import get_registry
from ..protocol import APIError
from ..registry import ModelRegistry
from ..wire import ModelList, ModelObject

router = APIRouter(prefix="/v1/models")


def _model_object(name: str, entry: dict) -> ModelObject:
    return ModelObject(id=name, created=entry["created"], owned_by=entry["owned_by"])


@router.get("", response_model=ModelList)
def list_models(registry: ModelRegistry = Depends(get_registry)):
    return ModelList(data=[_model_object(name, entry) for name, entry in registry.served().items()])


@router.get("/{name:path}", response_model=ModelObject)
def get_model(name: str, registry: ModelRegistry = Depends(get_registry)):
    entry = registry.served().get(name)
    if entry is None:
        raise APIError(404, f"The model `{name}` does not exist", param="model", code="model_not_found")
    return _model_object(name, entry)
