"""The service's requests and answers: every endpoint, the README example, 422s that name the field, valid
edge cases, one feature path with batch scoring, and requests scored together."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import math
import re
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from api import create_app
from clv.batch.scoring import score_bank
from clv.data.bank import load_bank
from clv.data.schema import LEDGER_COLUMNS
from clv.model.artifacts import LoadedModel
from clv.model.features import FEATURE_NAMES
from clv.service import answer
from clv.service.schemas.requests import EXAMPLE, MAX_BATCH, MAX_PRODUCTS, MAX_TRANSACTIONS, CustomerIn
from clv.service.schemas.responses import PredictionOut
from clv.service.settings import Settings

PREDICT = "/predict/clv"
BATCH = "/predict/clv/batch"
MISSING = object()  # a field left out of the body
JSON = {"content-type": "application/json"}
RESPONSE_FIELDS = {
    "customer_id",
    "predicted_clv",
    "clv_interval",
    "confidence_score",
    "horizon_months",
    "as_of",
    "drivers",
    "drivers_base",
    "model_version",
    "prediction_timestamp",
    "churn_probability",
    "churn_months",
    "churn_reason",
    "horizons",
}
TXN_DATE = ("transactions", 0, "transaction_date")
START = ("products", 0, "start_date")


def changed(body: dict, changes: dict[tuple, object]) -> dict:
    """A copy of the body with a value set (or left out, for MISSING) at each path of keys and indexes."""
    out = copy.deepcopy(body)
    for path, value in changes.items():
        parent = out
        for key in path[:-1]:
            parent = parent[key]
        if value is MISSING:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return out


def fields(response: httpx.Response) -> list[str]:
    """The fields a 422 names; the detail never echoes the input."""
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert all("input" not in error and error["msg"] for error in detail), detail
    return [error["field"] for error in detail]


def assert_prediction(result: dict) -> None:
    assert set(result) == RESPONSE_FIELDS, result
    interval = result["clv_interval"]
    assert interval["level"] == 0.8
    assert interval["low"] <= result["predicted_clv"] <= interval["high"]
    assert 0 <= result["confidence_score"] <= 1
    assert result["horizon_months"] > 0
    if result["churn_probability"] is None:  # a customer who had left already: the reason says so
        assert result["churn_reason"] and not result["drivers"]
    else:
        assert 0 <= result["churn_probability"] <= 1 and result["churn_reason"] is None
    for driver in result["drivers"]:
        assert driver["feature"] in FEATURE_NAMES
        assert set(driver) == {"feature", "value", "contribution"}


# ---- endpoints ------------------------------------------------------------------------------


def test_health_reports_the_serving_model(client: TestClient, loaded: LoadedModel) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "model_version", "trained_at", "uptime_seconds", "synthetic_data"}
    assert body["status"] == "ok"
    assert body["synthetic_data"] is True  # the small bank is the generator's, and says so
    assert body["model_version"] == loaded.version
    assert dt.datetime.fromisoformat(body["trained_at"]) == loaded.metadata.trained_at
    assert body["uptime_seconds"] >= 0


def test_model_card(client: TestClient, loaded: LoadedModel) -> None:
    response = client.get("/model")
    assert response.status_code == 200
    card = response.json()
    assert {"model", "model_without_ledger", "baseline_last12", "baseline_mean", "oracle"} == set(card["metrics"])
    assert card["metrics"]["oracle"] is not None  # the small bank writes its oracle
    assert card["metrics"]["model"]["normalized_gini"] == loaded.metadata.metrics.model.normalized_gini
    assert len(card["deciles"]) == 10
    assert sum(row["customers"] for row in card["deciles"]) == loaded.metadata.test_customers
    assert 0 < len(card["importance"]) <= 15 and all(row["feature"] in FEATURE_NAMES for row in card["importance"])
    assert card["interval_level"] == 0.8
    assert card["confidence_scale"] == loaded.model.scale_
    assert "data_fingerprint" not in card and "feature_names" not in card  # the card, not the whole metadata


def test_page_docs_and_openapi(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<html" in page.text.lower()
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    schema = client.get("/openapi.json").json()
    assert {PREDICT, BATCH, "/health", "/model"} <= set(schema["paths"])


def test_the_page_loads_its_parts_from_the_service_and_revalidates_them(client: TestClient) -> None:
    page = client.get("/").text
    parts = re.findall(r'(?:href|src)="(/static/[^"]+)"', page)
    assert {"/static/app.css", "/static/page.js"} <= set(parts)
    assert "<style" not in page and "<script>" not in page  # styles and script live in their own files
    modules, waiting = set(), ["/static/page.js"]
    while waiting:  # the entry module and every module it imports, followed as the browser does
        path = waiting.pop()
        modules.add(path)
        waiting += {f"/static/{m}" for m in re.findall(r'from "\./(\w+\.js)"', client.get(path).text)} - modules
    shipped = Path(__file__).resolve().parents[1].joinpath("static").glob("*.js")
    assert modules == {f"/static/{module.name}" for module in shipped}  # every module is reached, none is missing
    for path in sorted({*parts, *modules}):
        reply = client.get(path)
        assert reply.status_code == 200, path
        assert reply.headers["cache-control"] == "no-cache"
        assert reply.headers["content-type"].split(";")[0] in {"text/css", "text/javascript", "application/javascript"}
        again = client.get(path, headers={"If-None-Match": reply.headers["etag"]})
        assert again.status_code == 304 and not again.content  # unchanged: nothing sent again
    assert "https://" not in "".join(client.get(path).text for path in parts)  # no CDN: the page works offline


def component(response: dict) -> str:
    return response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]


def test_openapi_describes_every_response(client: TestClient) -> None:
    """Every route documents each status it answers, with the schema of its body."""
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    refusals = {status: "Problem" for status in ("401", "403", "409", "413", "429", "503")}
    refusals["422"] = "ValidationProblem"
    expected = {
        (PREDICT, "post"): {"200": "PredictionOut", **refusals},
        (BATCH, "post"): {"200": "BatchOut", **refusals},
        ("/health", "get"): {"200": "Health", "503": "Unavailable"},
        ("/model", "get"): {"200": "ModelCard", "401": "Problem", "403": "Problem", "429": "Problem", "503": "Problem"},
    }
    for (path, method), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert {status: component(r) for status, r in responses.items()} == statuses, (path, method)
    card = schema["components"]["schemas"]["ModelCard"]["properties"]
    assert {"metrics", "deciles", "importance", "confidence_scale"} <= set(card)


def test_responses_are_what_the_document_says(client: TestClient, example: dict) -> None:
    """The response models are applied: a body has exactly the documented fields, in the documented types."""
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    for path, name in ((PREDICT, "PredictionOut"), ("/health", "Health"), ("/model", "ModelCard")):
        response = client.post(path, json=example) if path == PREDICT else client.get(path)
        assert set(response.json()) <= set(schema[name]["properties"]), name
        assert set(schema[name].get("required", [])) <= set(response.json()), name


def test_readme_example(client: TestClient, example: dict, loaded: LoadedModel) -> None:
    response = client.post(PREDICT, json=example)
    assert response.status_code == 200, response.text
    result = response.json()
    assert_prediction(result)
    assert result["customer_id"] == 1
    assert result["model_version"] == loaded.version
    assert result["as_of"] == loaded.metadata.data_last_date.isoformat()  # the default: the model data's last date
    assert result["horizon_months"] == loaded.metadata.horizon_months
    assert 1 <= len(result["drivers"]) <= 5
    stamp = dt.datetime.fromisoformat(result["prediction_timestamp"])
    assert abs((dt.datetime.now(dt.UTC) - stamp).total_seconds()) < 60


def test_batch_scores_each_customer_in_order(client: TestClient, example: dict) -> None:
    customers = [changed(example, {("customer_id",): i, ("income",): 20_000 * i}) for i in range(1, 6)]
    response = client.post(BATCH, json={"customers": customers})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["customer_id"] for p in predictions] == [1, 2, 3, 4, 5]
    for p in predictions:
        assert_prediction(p)
    single = client.post(PREDICT, json=customers[2]).json()
    assert predictions[2]["predicted_clv"] == single["predicted_clv"]


def test_a_six_month_model_answers_for_six_months(six_month_model: Path, settings: Settings, example: dict) -> None:
    with TestClient(create_app(settings.model_copy(update={"model_dir": six_month_model}))) as six:
        result = six.post(PREDICT, json=example).json()
        assert result["horizon_months"] == 6
        assert six.get("/model").json()["horizon_months"] == 6


# ---- 422: the field is named, nothing is echoed, never a 500 ---------------------------------

INVALID = {
    "region": ({("region",): "Nowhere"}, "region"),
    "acquisition_channel": ({("acquisition_channel",): "Carrier pigeon"}, "acquisition_channel"),
    "product_type": ({("products", 0, "product_type"): "Bond"}, "products[0].product_type"),
    "product status": ({("products", 0, "status"): "Frozen"}, "products[0].status"),
    "transaction_type": ({("transactions", 0, "transaction_type"): "Gift"}, "transactions[0].transaction_type"),
    "channel": ({("transactions", 0, "channel"): "Fax"}, "transactions[0].channel"),
    "age under 18": ({("age",): 17}, "age"),
    "age over 120": ({("age",): 121}, "age"),
    "credit_score over 850": ({("credit_score",): 851}, "credit_score"),
    "credit_score under 300": ({("credit_score",): 299}, "credit_score"),
    "income negative": ({("income",): -1}, "income"),
    "income over 1e9": ({("income",): 2e9}, "income"),
    "tenure negative": ({("tenure_months",): -1}, "tenure_months"),
    "customer_id negative": ({("customer_id",): -5}, "customer_id"),
    "age missing": ({("age",): MISSING}, "age"),
    "region missing": ({("region",): MISSING}, "region"),
    "transaction_date missing": ({TXN_DATE: MISSING}, "transactions[0].transaction_date"),
    "amount over 1e9": ({("transactions", 0, "amount"): 1.5e9}, "transactions[0].amount"),
    "amount under -1e9": ({("transactions", 0, "amount"): -1.5e9}, "transactions[0].amount"),
    "amount not a number": ({("transactions", 0, "amount"): "lots"}, "transactions[0].amount"),
    "balance over 1e9": ({("products", 0, "balance"): 1e10}, "products[0].balance"),
    "not a date": ({TXN_DATE: "2024-13-01"}, "transactions[0].transaction_date"),
    "transaction in 2030": ({TXN_DATE: "2030-01-01T10:00:00"}, "transactions[0].transaction_date"),
    "product start in 2030": ({START: "2030-01-01"}, "products[0].start_date"),
    "product end in 2030": ({("products", 0, "end_date"): "2030-01-01"}, "products[0].end_date"),
    "join_date in 2030": ({("join_date",): "2030-01-01"}, "join_date"),
    "after the given as_of": ({("as_of",): "2023-06-30"}, "transactions[0].transaction_date"),
    "join_date a number": ({("join_date",): 0}, "join_date"),  # never read as a Unix time
    "join_date digits": ({("join_date",): "1700000000"}, "join_date"),
    # the calendar date written counts: 00:30 at +05:00 is still 2025-01-01, after as_of
    "offset date after as_of": (
        {("as_of",): "2024-12-31", TXN_DATE: "2025-01-01T00:30:00+05:00"},
        "transactions[0].transaction_date",
    ),
    "ledger month": ({("ledger",): [{"month": "2024-13", "net_margin": 1}]}, "ledger[0].month"),
    "ledger month after as_of": (
        {
            ("as_of",): "2024-06-30",
            ("ledger",): [{"month": "2024-06", "net_margin": 1}, {"month": "2024-07", "net_margin": 1}],
        },
        "ledger[1].month",
    ),
}


@pytest.mark.parametrize(("changes", "field"), INVALID.values(), ids=INVALID.keys())
def test_invalid_field_is_named(client: TestClient, example: dict, changes: dict, field: str) -> None:
    assert field in fields(client.post(PREDICT, json=changed(example, changes)))


def raw_body(**replace: str) -> bytes:
    """The README example as JSON text, with fields replaced by raw JSON tokens (NaN, Infinity, ...)."""
    text = json.dumps(EXAMPLE)
    for name, token in replace.items():
        text, n = re.subn(rf'"{name}": [^,}}]+', lambda _, name=name, token=token: f'"{name}": {token}', text)
        assert n, name
    return text.encode()


RAW = {
    "NaN age": (raw_body(age="NaN"), "age"),
    "Infinity income": (raw_body(income="Infinity"), "income"),
    "-Infinity amount": (raw_body(amount="-Infinity"), "transactions[0].amount"),
    "NaN balance": (raw_body(balance="NaN"), "products[0].balance"),
    "lone surrogate in region": (raw_body(region=r'"North\ud800"'), "region"),
    "lone surrogate in product_type": (raw_body(product_type=r'"\udfff"'), "products[0].product_type"),
}


@pytest.mark.parametrize(("content", "field"), RAW.values(), ids=RAW.keys())
def test_unencodable_input_gets_422_naming_the_field(client: TestClient, content: bytes, field: str) -> None:
    """NaN, Infinity and lone surrogates are named without being echoed (echoing them cannot be encoded)."""
    assert field in fields(client.post(PREDICT, content=content, headers=JSON))


def test_lone_surrogate_in_an_unknown_key_is_named_not_echoed(client: TestClient) -> None:
    content = raw_body(customer_id=r'1, "\ud800": "\ud800"')
    response = client.post(PREDICT, content=content, headers=JSON)
    assert response.status_code == 422 and "\\ud800" not in response.text


def test_malformed_json_is_422(client: TestClient) -> None:
    for content in (b'{"customer_id": 1,', b"", b"[1, 2]", b"null", b'{"customer_id": "\xff\xfe"}'):
        assert fields(client.post(PREDICT, content=content, headers=JSON)) == ["body"], content


def test_list_limits(client: TestClient, example: dict) -> None:
    product = example["products"][0]
    assert client.post(PREDICT, json={**example, "products": [product] * MAX_PRODUCTS}).status_code == 200
    assert "products" in fields(client.post(PREDICT, json={**example, "products": [product] * (MAX_PRODUCTS + 1)}))

    txn = {"transaction_date": "2024-01-01", "amount": 1}
    at_limit = {**example, "transactions": [txn] * MAX_TRANSACTIONS}
    assert client.post(PREDICT, json=at_limit).status_code == 200
    over = json.dumps({**example, "transactions": [txn] * (MAX_TRANSACTIONS + 1)}, separators=(",", ":")).encode()
    assert len(over) < 2 * 1024 * 1024  # a 422 from the schema, not a 413 from the size
    assert "transactions" in fields(client.post(PREDICT, content=over, headers=JSON))


def test_batch_errors_name_index_and_field(client: TestClient, example: dict) -> None:
    customers = [copy.deepcopy(example) for _ in range(5)]
    customers[3]["age"] = 7
    customers[1]["transactions"][0]["transaction_date"] = "2030-01-01"
    response = client.post(BATCH, json={"customers": customers})
    assert "customers[3].age" in fields(response)

    customers[3]["age"] = 40  # schema-valid now; the date after as_of is found next
    late = fields(client.post(BATCH, json={"customers": customers}))
    assert late == ["customers[1].transactions[0].transaction_date"]

    nan = b'{"customers": [' + raw_body() + b", " + raw_body(income="NaN") + b"]}"
    assert "customers[1].income" in fields(client.post(BATCH, content=nan, headers=JSON))

    assert "customers" in fields(client.post(BATCH, json={"customers": [example] * (MAX_BATCH + 1)}))
    assert "customers" in fields(client.post(BATCH, json={"customers": []}))


# ---- valid edge cases -------------------------------------------------------------------------

VALID = {
    "empty products and transactions": {("products",): [], ("transactions",): []},
    "null products and transactions": {("products",): None, ("transactions",): None},
    "tenure 0": {("tenure_months",): 0},
    "a new customer": {("tenure_months",): 0, ("products",): [], ("transactions",): []},
    "plain ISO dates": {START: "2023-01-01", TXN_DATE: "2024-01-01"},
    "offset +05:00": {START: "2023-01-01T00:00:00+05:00"},
    "offset Z": {TXN_DATE: "2024-01-01T10:00:00Z"},
    # 23:30 at -05:00 on as_of is already the next day in UTC; the calendar date written counts
    "offset late on as_of": {("as_of",): "2024-12-31", TXN_DATE: "2024-12-31T23:30:00-05:00"},
    "amounts at the limits": {("transactions", 0, "amount"): -1e9, ("products", 0, "balance"): 1e9},
    "optional enums left out": {
        ("transactions", 0, "transaction_type"): MISSING,
        ("transactions", 0, "channel"): MISSING,
    },
    "a ledger": {("ledger",): [{"month": "2024-11", "net_margin": 12.5}, {"month": "2024-12", "net_margin": 14.0}]},
    "join_date": {("join_date",): "2022-12-01"},
}


@pytest.mark.parametrize("changes", VALID.values(), ids=VALID.keys())
def test_valid_edge_cases(client: TestClient, example: dict, changes: dict) -> None:
    response = client.post(PREDICT, json=changed(example, changes))
    assert response.status_code == 200, response.text
    assert_prediction(response.json())


@pytest.mark.parametrize("as_of", ["2024-06-30", "2024-06-30T23:00:00-05:00"])
def test_as_of_is_used_and_returned(client: TestClient, example: dict, as_of: str) -> None:
    response = client.post(PREDICT, json={**example, "as_of": as_of})
    assert response.status_code == 200, response.text
    assert response.json()["as_of"] == "2024-06-30"  # the calendar date written
    default = client.post(PREDICT, json=example).json()
    assert response.json()["predicted_clv"] != default["predicted_clv"]  # as_of changes the features


def test_a_customer_with_only_closed_products_is_worth_nothing(client: TestClient, example: dict) -> None:
    closed = [
        {"product_type": "Savings", "start_date": "2022-01-01", "end_date": "2024-03-01", "status": "Closed"},
        {"product_type": "Credit Card", "start_date": "2021-05-01", "end_date": "2023-11-30", "status": "Closed"},
    ]
    response = client.post(PREDICT, json={**example, "products": closed})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["predicted_clv"] == 0
    assert result["clv_interval"]["low"] == result["clv_interval"]["high"] == 0
    assert result["drivers"] == []
    # one product still open: the customer is scored by the model again
    still_open = [*closed, example["products"][0]]
    assert client.post(PREDICT, json={**example, "products": still_open}).json()["drivers"]


# ---- one feature path: the API and batch scoring agree -----------------------------------------


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    """Rows as request items, in the table's order; an empty cell is a field left out."""
    rows = frame[columns].to_dict("records")
    return [{k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))} for row in rows]


def request_from_tables(tables: dict[str, pd.DataFrame], customer_id: int, as_of: str) -> dict:
    """The body a bank system would send for one customer of the tables, its ledger included."""
    mine = {name: table[table["customer_id"] == customer_id] for name, table in tables.items()}
    customer_columns = ["age", "income", "credit_score", "tenure_months", "region", "acquisition_channel", "join_date"]
    (customer,) = _records(mine["customers"], customer_columns)
    product_columns = ["product_type", "start_date", "end_date", "balance", "credit_limit", "interest_rate", "status"]
    return {
        "customer_id": customer_id,
        **customer,
        "as_of": as_of,
        "products": _records(mine["products"], product_columns),
        "transactions": _records(mine["transactions"], ["transaction_date", "transaction_type", "amount", "channel"]),
        "ledger": _records(mine["customer_metrics"], ["month", *LEDGER_COLUMNS]),
    }


def comparable(result: dict | PredictionOut) -> dict:
    if isinstance(result, PredictionOut):
        result = result.model_dump(mode="json", exclude_unset=True)
    return {k: v for k, v in result.items() if k != "prediction_timestamp"}


def test_api_and_batch_scoring_agree(client: TestClient, bank_dir: Path, loaded: LoadedModel) -> None:
    """Customers of the small bank, sent as the tables have them, one by one and in one batch call, get the
    numbers `score_bank` gives them from the tables (to the cent)."""
    scores = score_bank(loaded.predictor, load_bank(bank_dir)).set_index("customer_id")
    names = ("customers", "products", "transactions", "customer_metrics")
    tables = {name: pd.read_csv(bank_dir / f"{name}.csv", dtype={"month": str}) for name in names}
    ranked = scores["predicted_clv"].sort_values(kind="stable")
    gone = scores.index[scores["driver_1"] == "no open product"]
    picks = {int(ranked.index[round(q * (len(ranked) - 1))]) for q in (0, 0.25, 0.5, 0.75, 1)}
    picks = sorted(picks | {int(i) for i in gone[:1]})
    as_of = loaded.metadata.data_last_date.isoformat()
    bodies = [request_from_tables(tables, customer_id, as_of) for customer_id in picks]
    singles = []
    for body in bodies:
        response = client.post(PREDICT, json=body)
        assert response.status_code == 200, response.text
        singles.append(response.json())
    batch = client.post(BATCH, json={"customers": bodies})
    assert batch.status_code == 200, batch.text
    assert [comparable(r) for r in batch.json()["predictions"]] == [comparable(r) for r in singles]
    for customer_id, result in zip(picks, singles, strict=True):
        expected = scores.loc[customer_id]
        assert result["predicted_clv"] == pytest.approx(expected["predicted_clv"], abs=0.005), customer_id
        assert result["clv_interval"]["low"] == pytest.approx(expected["clv_low"], abs=0.005), customer_id
        assert result["clv_interval"]["high"] == pytest.approx(expected["clv_high"], abs=0.005), customer_id
        if result["drivers"]:
            assert result["drivers"][0]["feature"] == expected["driver_1"]
        if math.isnan(expected["churn_probability"]):  # had left already: null, and why
            assert result["churn_probability"] is None and "no open product" in result["churn_reason"]
        else:
            assert result["churn_probability"] == pytest.approx(expected["churn_probability"], abs=5e-5), customer_id
    assert any(r["churn_probability"] is None for r in singles) and any(r["churn_probability"] for r in singles)


def mixed_customers(example: dict) -> list[dict]:
    """Customers that cannot all share one Bank: other as-of dates, with and without a ledger, gone, new."""
    closed = {"product_type": "Checking", "start_date": "2022-01-01", "end_date": "2024-02-01", "status": "Closed"}
    ledger = [{"month": f"2024-{m:02d}", "net_margin": 10.0 * m, "deposits_balance": 900.0} for m in range(1, 13)]
    variants = [
        {},
        {"as_of": "2024-06-30"},
        {"ledger": ledger},
        {"ledger": ledger[:6], "as_of": "2024-06-30"},
        {"products": [closed]},
        {"products": [], "transactions": [], "tenure_months": 0},
        {"income": 250_000, "age": 61, "join_date": "2019-03-01"},
        {"products": [*example["products"], closed], "ledger": ledger[3:]},
    ]
    return [{**example, "customer_id": 100 + i, **variant} for i, variant in enumerate(variants)]


def test_batch_equals_single_requests_for_mixed_customers(client: TestClient, example: dict) -> None:
    customers = mixed_customers(example)
    singles = [comparable(client.post(PREDICT, json=customer).json()) for customer in customers]
    batch = client.post(BATCH, json={"customers": customers})
    assert batch.status_code == 200, batch.text
    assert [comparable(r) for r in batch.json()["predictions"]] == singles
    assert len({r["predicted_clv"] for r in singles}) > 4  # the variants are really different customers


def test_requests_that_arrive_together_are_scored_in_one_call(loaded: LoadedModel, example: dict) -> None:
    """Single requests that arrive together are scored in one call, each getting what it gets alone."""
    customers = [CustomerIn.model_validate(c) for c in mixed_customers(example)]
    alone = [comparable(answer.score(loaded, [customer])[0]) for customer in customers]
    batcher = answer.MicroBatcher()

    async def concurrently() -> list[dict]:
        return await asyncio.gather(*(batcher.score(loaded, customer) for customer in customers))

    results = asyncio.run(concurrently())
    assert batcher.calls == 1
    assert [comparable(r) for r in results] == alone


def test_concurrent_requests_to_the_service_share_scoring_calls(client: TestClient, example: dict) -> None:
    """Eight requests sent at once through the app are answered by fewer scoring calls than requests."""
    batcher = client.app.state.service.batcher
    before = batcher.calls

    async def eight() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            bodies = [{**example, "customer_id": i} for i in range(8)]
            return await asyncio.gather(*(http.post(PREDICT, json=body) for body in bodies))

    responses = asyncio.run(eight())
    assert [r.status_code for r in responses] == [200] * 8
    assert [r.json()["customer_id"] for r in responses] == list(range(8))
    assert batcher.calls - before < 8


def test_a_failure_scored_together_stays_with_its_request(
    loaded: LoadedModel, example: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = answer.score

    def fragile(loaded: LoadedModel, batch: list[CustomerIn], *args: object) -> list[PredictionOut]:
        if any(customer.customer_id == 13 for customer in batch):
            raise RuntimeError("customer 13 breaks the model")
        return real(loaded, batch, *args)

    monkeypatch.setattr(answer, "score", fragile)
    batcher = answer.MicroBatcher()

    async def concurrently() -> list:
        customers = [CustomerIn.model_validate({**example, "customer_id": i}) for i in (1, 13, 2)]
        return await asyncio.gather(*(batcher.score(loaded, c) for c in customers), return_exceptions=True)

    first, broken, last = asyncio.run(concurrently())
    assert first.customer_id == 1 and last.customer_id == 2
    assert isinstance(broken, RuntimeError)
    assert batcher.calls == 1
