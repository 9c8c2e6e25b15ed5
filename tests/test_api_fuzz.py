"""Schemathesis against the app's own OpenAPI schema: generated requests, valid and invalid, never get a 5xx.

`schemathesis.pytest.from_fixture` fails under pytest 9 (it sets `request.node._nodeid`, which pytest 9
removed), so each operation's cases are drawn with `as_strategy` inside an ordinary test instead.
"""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.checks import not_a_server_error

from api import create_app
from clv.settings import Settings

MAX_EXAMPLES = 50  # per operation and mode; the whole run stays well under a minute on 2 cores
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


@pytest.fixture
def api_schema(settings: Settings) -> schemathesis.BaseSchema:
    """The schema of an app serving the small bank's model. Schemathesis runs the app's lifespan on the
    first request (so the model is loaded) and its pytest plugin ends it when the test ends."""
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))


def operations(schema: schemathesis.BaseSchema) -> list[schemathesis.APIOperation]:
    return [result.ok() for result in schema.get_all_operations()]


def test_schema_lists_every_operation(api_schema: schemathesis.BaseSchema) -> None:
    labels = {op.label for op in operations(api_schema)}
    assert labels == {"POST /predict/clv", "POST /predict/clv/batch", "GET /health", "GET /model"}


def fuzz(operation: schemathesis.APIOperation, mode: schemathesis.GenerationMode) -> set[int]:
    """Send MAX_EXAMPLES generated requests to one operation; fail on any 5xx; return the statuses seen."""
    seen: set[int] = set()

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(case: schemathesis.Case) -> None:
        seen.add(case.call_and_validate(checks=[not_a_server_error]).status_code)

    check()
    return seen


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_no_server_error(api_schema: schemathesis.BaseSchema, mode: schemathesis.GenerationMode) -> None:
    negative = mode == schemathesis.GenerationMode.NEGATIVE
    # an operation with no parameters and no body has no invalid request to generate
    statuses = {
        op.label: fuzz(op, mode) for op in operations(api_schema) if not negative or len(op.body) or len(op.query)
    }
    if negative:
        assert 422 in statuses["POST /predict/clv"], statuses
    else:  # the run reached the model, not only the refusals
        assert 200 in statuses["POST /predict/clv"], statuses
        assert 200 in statuses["GET /model"], statuses
