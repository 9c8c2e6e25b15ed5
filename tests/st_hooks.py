"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests/st_hooks.py): what the OpenAPI document cannot state, and
one place where schemathesis misreads it.

- A customer's dates must not lie after its as_of (a schema cannot compare two fields; the operations'
  422 description says so). A schema-valid customer generated with a later date is made consistent by
  moving its as_of to its latest date, so that positive cases test what the document promises.
- A date field is one of two string formats (`date` or `date-time`). Schemathesis's coverage phase negates
  each format alone and can send a valid `date` as "not a date-time"; a "negative" case whose body the
  document admits (checked with schemathesis's own validator of the operation's body) is dropped.
"""

from __future__ import annotations

import schemathesis

DATED = {"products": ("start_date", "end_date"), "transactions": ("transaction_date",)}


def _latest(customer: dict) -> str | None:
    """The latest calendar date written anywhere in the customer (as YYYY-MM-DD), or None."""
    found = [customer.get("join_date")]
    for group, names in DATED.items():
        items = customer.get(group) or []
        found += [item.get(name) for item in items if isinstance(item, dict) for name in names]
    found = [value[:10] for value in found if isinstance(value, str)]
    months = [row.get("month") for row in customer.get("ledger") or [] if isinstance(row, dict)]
    found += [f"{month}-01" for month in months if isinstance(month, str)]
    return max(found, default=None)


def _consistent(customer: object) -> None:
    if not isinstance(customer, dict):
        return
    latest = _latest(customer)
    as_of = customer.get("as_of")
    if latest is not None and (not isinstance(as_of, str) or as_of[:10] < latest):
        customer["as_of"] = latest


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not isinstance(case.body, dict):
        return case
    if case.operation.path == "/predict/clv":
        _consistent(case.body)
    elif case.operation.path == "/predict/clv/batch":
        for customer in case.body.get("customers") or []:
            _consistent(customer)
    return case


@schemathesis.hook
def filter_case(context: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    meta = case.meta
    if meta is None or meta.generation.mode.is_positive or not isinstance(case.body, dict | list):
        return True
    bodies = [body for body in case.operation.body if body.media_type == case.media_type] or case.operation.body
    return not all(body.is_valid(case.body) for body in bodies)
