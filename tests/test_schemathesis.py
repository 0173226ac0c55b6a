"""Property-based API testing from /openapi.json (schemathesis): no 5xx, and every response
conforms to the documented schema, for generated valid and invalid requests. Bounded in
examples per operation and in time; runs with an admin key so the write routes are exercised."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app  # noqa: E402
from blipsearch.config import Settings  # noqa: E402
from service.indexing import index_paths  # noqa: E402
from storage.api_keys import create_key  # noqa: E402
from storage.catalog import open_catalog  # noqa: E402
from tests.helpers import write_images  # noqa: E402

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("schema")
    write_images(root / "imports", 6)
    s = Settings(
        data_dir=root / "data",
        model=str(tiny_models["blip-itm"]),
        caption_model=str(tiny_models["blip-caption"]),
        batch_size=4,
        max_upload_bytes=200_000,
        max_image_pixels=4_000_000,
        import_roots=[root / "imports"],
    )
    index_paths(s, [root / "imports"], "photos", progress=False)
    key = create_key(open_catalog(s.catalog_url()), "schemathesis", "admin")[0]
    app = create_app(s)
    return app, key


def test_openapi_contract(served):
    """Every operation, valid and invalid generated requests (the pytest plugin of schemathesis
    is not used: it does not support this pytest; the loop below is its equivalent)."""
    from hypothesis import given

    app, key = served
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    failures = []
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except Exception as exc:
            failures.append(f"{op.label}: {exc}")
    assert not failures, "\n\n".join(failures)
