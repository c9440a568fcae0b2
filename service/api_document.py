"""One correction to BentoML's generated OpenAPI document (/docs.json), so that it describes what is sent.

BentoML 1.4 documents the 400 of its typed endpoints (here /probabilities) with `detail` as a string, but sends
pydantic's list of errors there. The contract tests (tests/integration/test_contract.py) check every answer
against the document and caught it; this widens `detail` to what BentoML sends.
"""

from __future__ import annotations

import importlib

from bentoml._internal.service.openapi.specification import Schema

bentoml_openapi = importlib.import_module("_bentoml_sdk.service.openapi")

_generate_spec = bentoml_openapi.generate_spec
DETAIL = Schema(
    title="Error Detail",
    oneOf=[Schema(type="string"), Schema(type="array", items=Schema(type="object"))],
)


def generate_spec(svc, **kwargs):
    spec = _generate_spec(svc, **kwargs)
    schema = spec.components.get("schemas", {}).get("InvalidArgument")
    if schema is not None and schema.properties and "detail" in schema.properties:
        schema.properties["detail"] = DETAIL
    return spec


def correct_bentoml_openapi() -> None:
    """Service.openapi_spec imports generate_spec on every call, so replacing the module's function suffices."""
    bentoml_openapi.generate_spec = generate_spec
