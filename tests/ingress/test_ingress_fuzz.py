"""Property-based fuzzing of the webhook endpoint: whatever the body and content type, the
answer is 200, 400, 413 or 415, never a 500 (and the process keeps serving)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ingress.fixtures import event, ingress_client, make_settings

LIMIT = 4096
ALLOWED = {200, 400, 413, 415}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | \
    st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=5),
    max_leaves=30,
)
# Envelope-shaped objects: known keys with arbitrary values, plus arbitrary extras.
envelopes = st.fixed_dictionaries(
    {"type": st.sampled_from(["CALL_RECEIVED", "CALL_FINISHED", "DIALOG_CREATED", "", "NEW"])
     | json_values},
    optional={"callId": json_values, "timestamp": st.text(max_size=30) | json_values,
              "properties": json_values | st.fixed_dictionaries(
                  {}, optional={"call": json_values, "callLog": json_values,
                                "dialog": json_values}),
              "platform": json_values, "extra": json_values},
)


def _dumps(value: object) -> bytes:
    # The stdlib encoder: big integers included (orjson refuses them).
    return json.dumps(value).encode()


bodies = st.one_of(
    envelopes.map(_dumps),
    json_values.map(_dumps),
    st.binary(max_size=600),
    st.text(max_size=300).map(str.encode),
    # Sizes around and far beyond the limit.
    st.integers(LIMIT - 50, LIMIT * 4).map(
        lambda n: b'{"type":"CALL_RECEIVED","pad":"' + b"x" * n + b'"}'),
    st.integers(0, LIMIT * 3).map(lambda n: b"[" * n),
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
content_types = st.one_of(
    st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                     "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                     "application/cloudevents+json", "APPLICATION/JSON", "application/"]),
    header_text,
)


@pytest.fixture
async def fuzz_client(redis_url: str) -> AsyncIterator[Any]:
    async with ingress_client(make_settings(redis_url, ingress_max_body_bytes=LIMIT)) as client:
        yield client


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=bodies, content_type=content_types)
async def test_fuzzed_bodies_never_500(fuzz_client: Any, body: bytes,
                                       content_type: str) -> None:
    resp = await fuzz_client.post("/webhook", data=body,
                                  headers={"Content-Type": content_type})
    assert resp.status in ALLOWED, (resp.status, await resp.text())
    if resp.status != 200:
        answer = await resp.json()
        assert answer["error"] and answer["detail"]


async def test_still_serving_after_fuzzing(fuzz_client: Any) -> None:
    for body in (b"\x00" * 10, b"[" * 5000, b'{"type":' * 300):
        resp = await fuzz_client.post("/webhook", data=body,
                                      headers={"Content-Type": "application/json"})
        assert resp.status in ALLOWED
    ok = await fuzz_client.post("/webhook", data=event("c-1"),
                                headers={"Content-Type": "application/json"})
    assert ok.status == 200
