"""The Calls API as Infobip publishes it: requests, responses and webhook events checked
against Infobip's own OpenAPI document, never against callbridge's models.

The document is Infobip's Voice OpenAPI specification, reduced to the operations this
simulator serves (simulators/infobip/spec/, README.md there says where it comes from and how
it was cut). Schemas are JSON Schema 2020-12 (OpenAPI 3.1) and are checked with
`jsonschema`; OpenAPI's `discriminator` keyword, which JSON Schema does not know, is
implemented here as OpenAPI 3.1 defines it (https://spec.openapis.org/oas/v3.1.0#discriminator-object):
the `propertyName` must be present and its value must name a `mapping` entry, and the object
must then also be valid against that entry's schema. That is where the document is strict
and our models were lenient (a media-stream config without `type`, an endpoint without one).

`format` is not asserted: the document's own examples write timestamps as
`2026-01-15T12:00:00.000+0000`, which RFC 3339 `date-time` rejects.
"""

from __future__ import annotations

import contextvars
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).with_name("spec") / "infobip-voice-openapi.reduced.json"
_BASE = "urn:infobip:voice-openapi"
_ERROR_SCHEMA = "#/components/schemas/ApiException"
_WEBHOOK = "calls-event-webhook"


class SpecViolation(AssertionError):
    """The simulator itself produced a response or webhook the published spec rejects."""


#: (instance id, mapped schema) pairs being checked, so a mapped schema whose `allOf` comes
#: back to the discriminating base does not dispatch again (and recurse forever)
_dispatching: contextvars.ContextVar[frozenset[tuple[int, str]]] = contextvars.ContextVar(
    "infobip_discriminator_dispatch", default=frozenset())


def _discriminator(validator: Any, discriminator: dict[str, Any], instance: Any,
                   schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    name = discriminator["propertyName"]
    if name not in instance:
        yield ValidationError(f"{name!r} is a required property (discriminator)")
        return
    mapping: dict[str, str] = discriminator.get("mapping", {})
    target = mapping.get(instance[name])
    if target is None:
        yield ValidationError(f"{instance[name]!r} is not one of {sorted(mapping)}",
                              path=[name])
        return
    key = (id(instance), target)
    active = _dispatching.get()
    if key in active:
        return
    token = _dispatching.set(active | {key})
    try:
        # Collected eagerly: the context var must be set while the mapped schema runs.
        errors = list(validator.descend(instance, {"$ref": target}))
    finally:
        _dispatching.reset(token)
    yield from errors


_OpenApiValidator = validators.extend(Draft202012Validator, {"discriminator": _discriminator})


@dataclass(frozen=True)
class Problem:
    """One violation: a JSON path (`childCallRequest.endpoint.type`) and its message."""

    path: str
    message: str


class InfobipSpec:
    """The reduced document with validators for its operations and the event webhook."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.info: dict[str, Any] = document["info"]
        resource: Resource[Any] = DRAFT202012.create_resource(document)
        self._registry: Registry[Any] = Registry().with_resource(_BASE, resource)

    def _validator(self, ref: str) -> Any:
        return _OpenApiValidator({"$ref": _BASE + ref}, registry=self._registry)

    def _operation(self, method: str, path: str) -> dict[str, Any]:
        try:
            operation: dict[str, Any] = self.document["paths"][path][method.lower()]
            return operation
        except KeyError:
            raise KeyError(f"{method} {path} is not in the published spec (or not vendored)"
                           ) from None

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = self._lookup(node["$ref"])
        return node

    def _lookup(self, ref: str) -> dict[str, Any]:
        node: Any = self.document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict)
        return node

    @staticmethod
    def _schema_ref(media: dict[str, Any] | None) -> str | None:
        schema = ((media or {}).get("content", {}).get("application/json", {})
                  .get("schema", {}))
        ref = schema.get("$ref")
        return ref if isinstance(ref, str) else None

    def _problems(self, ref: str, instance: Any) -> list[Problem]:
        errors = sorted(self._validator(ref).iter_errors(instance),
                        key=lambda e: [str(p) for p in e.absolute_path])
        return [Problem(_field_path(e), e.message) for e in errors]

    # requests ----------------------------------------------------------------------------

    def request_problems(self, method: str, path: str, body: Any) -> list[Problem]:
        """What is wrong with a request body for `method path` (a spec path template);
        empty when valid. An absent body is checked against `requestBody.required`."""
        request = self._operation(method, path).get("requestBody")
        if request is None:
            return []
        request = self._resolve(request)
        if body is None:
            return ([Problem("body", "a JSON request body is required")]
                    if request.get("required") else [])
        ref = self._schema_ref(request)
        return self._problems(ref, body) if ref else []

    # responses and webhooks (the simulator's own output) ---------------------------------

    def check_response(self, method: str, path: str, status: int, body: Any) -> None:
        """Raise SpecViolation unless `body` is what the spec documents for `status`.

        An error status the operation does not list (a simulated 503) must still carry
        Infobip's ApiException body; an undocumented success status is a violation."""
        responses = self._operation(method, path)["responses"]
        documented = responses.get(str(status))
        if documented is None:
            if status < 400:
                raise SpecViolation(f"{method} {path} does not document status {status}")
            ref: str | None = _ERROR_SCHEMA
        else:
            ref = self._schema_ref(self._resolve(documented))
        if ref is None:
            return
        problems = self._problems(ref, body)
        if problems:
            raise SpecViolation(f"{method} {path} -> {status} violates the spec: "
                                + "; ".join(f"{p.path}: {p.message}" for p in problems[:5]))

    def check_event(self, event: dict[str, Any]) -> None:
        """Raise SpecViolation unless `event` is a valid calls event webhook body."""
        operation = self.document["webhooks"][_WEBHOOK]["post"]
        ref = self._schema_ref(operation["requestBody"])
        assert ref is not None
        problems = self._problems(ref, event)
        if problems:
            raise SpecViolation(f"webhook {event.get('type')} violates the spec: "
                                + "; ".join(f"{p.path}: {p.message}" for p in problems[:5]))


_REQUIRED = re.compile(r"^'([^']+)' is a required property")


def _field_path(error: ValidationError) -> str:
    """`childCallRequest.endpoint.type`: a missing property is named in its own path, as
    Infobip's `validationErrors` keys name fields."""
    parts = [str(p) for p in error.absolute_path]
    missing = _REQUIRED.match(error.message)
    if missing:
        parts.append(missing.group(1))
    return ".".join(parts) or "body"


@cache
def published_spec() -> InfobipSpec:
    """The vendored, reduced published spec (loaded once)."""
    return InfobipSpec(json.loads(SPEC_PATH.read_text()))


def validation_errors(problems: list[Problem]) -> dict[str, list[str]]:
    """Problems as Infobip's `validationErrors` {field path: [messages]}."""
    out: dict[str, list[str]] = {}
    for problem in problems:
        out.setdefault(problem.path, []).append(problem.message)
    return out
