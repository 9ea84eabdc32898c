"""The requests `make bench` replays (``cds.replay.request_for``): one per registered
service and shared Synthea patient, each carrying exactly the service's prefetch keys,
answered 200 by the real app (the benchmark counts any other answer as an error)."""

from __future__ import annotations

import pytest

from cds.replay import request_for
from cds.services import BUILT_IN_SERVICES
from tests.conftest import synthea_bundles


@pytest.mark.parametrize("service", BUILT_IN_SERVICES, ids=lambda s: s.id)
def test_every_service_answers_its_replayed_requests(service, app, mint):
    client = app.test_client()
    path = f"/cds-services/{service.id}"
    for bundle in synthea_bundles()[:3]:
        body = request_for(service.hook, service.prefetch, bundle)
        assert body["hook"] == service.hook
        assert set(body["prefetch"]) == set(service.prefetch)
        if service.hook in ("order-select", "order-sign"):
            drafts = body["context"]["draftOrders"]["entry"]
            assert [d["resource"]["status"] for d in drafts] == ["draft", "draft"]
        response = client.post(path, json=body, headers={"Authorization": f"Bearer {mint(path)}"})
        assert response.status_code == 200, response.json
        assert isinstance(response.json["cards"], list)


def test_a_hook_without_a_replay_request_is_refused():
    with pytest.raises(ValueError, match="encounter-discharge"):
        request_for("encounter-discharge", ("patient",), synthea_bundles()[0])
