"""The page at / in a real browser: Playwright driving Debian's Chromium against the real server."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from clv.data.schema import (
    AcquisitionChannel,
    Channel,
    ProductStatus,
    ProductType,
    Region,
    TransactionType,
)
from clv.model import artifacts
from clv.model.features import FEATURE_NAMES
from clv.service.schemas.requests import EXAMPLE, MAX_ID, MAX_LEDGER_MONTHS, MAX_PRODUCTS, MAX_TRANSACTIONS
from tests.conftest import resave
from tests.servers import ApiProcess, run_script, wait_until

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
PROFILES = ("new", "saver", "mortgage", "drifting")
MONEY = re.compile(r"^−?-?\$[\d,]+\.\d{2}$")


@pytest.fixture(scope="module")
def unready_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """The service with no model and no training: it answers 503. Started first, so it boots while the bank and
    the model of the other fixtures are being made."""
    models = tmp_path_factory.mktemp("no_models")
    data = tmp_path_factory.mktemp("no_data")
    server = ApiProcess(
        tmp_path_factory.mktemp("unready"),
        CLV_MODEL_DIR=str(models),
        CLV_DATA_DIR=str(data),
        CLV_TRAIN_ON_START="false",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def promotable(model_dir: Path, bank_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """The service on its own copy of the model folder (`.models`), looking at `latest` every second: a test may
    promote a new version there, and its drift window starts empty. Started, not awaited, with `server`."""
    models = tmp_path_factory.mktemp("promotable") / "models"
    shutil.copytree(model_dir, models, symlinks=True)
    process = ApiProcess(
        tmp_path_factory.mktemp("promotable_log"),
        CLV_MODEL_DIR=str(models),
        CLV_DATA_DIR=str(bank_dir),
        CLV_RELOAD_SECONDS="1",
    )
    process.models = models
    yield process
    process.stop()


@pytest.fixture(scope="module")
def server(
    unready_server: ApiProcess,
    promotable: ApiProcess,
    model_dir: Path,
    bank_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The real service with the small trained model and a scoring run of its bank (the other two servers boot
    meanwhile)."""
    scores = tmp_path_factory.mktemp("scores")
    done = run_script(
        "model.py", "score", "--data-dir", bank_dir, "--model-dir", model_dir, "--scores-dir", scores, "--quiet"
    )
    assert done.returncode == 0, done.stderr
    running = ApiProcess(
        tmp_path_factory.mktemp("server"),
        CLV_MODEL_DIR=str(model_dir),
        CLV_DATA_DIR=str(bank_dir),
        CLV_SCORES_DIR=str(scores),
    )
    try:
        yield running.ready()
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is missing: `make system` (apt-get install chromium); the page tests never download one")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Watch:
    """Console errors and page errors; a test names the HTTP statuses it provokes on purpose."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.allowed: list[re.Pattern] = []

    def allow(self, *statuses: int | str) -> None:
        for status in statuses:
            text = f"status of {status}" if isinstance(status, int) else status
            self.allowed.append(re.compile(re.escape(text)))

    def console(self, message: object) -> None:
        if message.type == "error" and not any(p.search(message.text) for p in self.allowed):
            self.problems.append(f"console error: {message.text}")

    def page_error(self, error: object) -> None:
        self.problems.append(f"page error: {error}")


@contextmanager
def _opened(browser: object, base: str, width: int = 1280) -> Iterator[tuple[object, Watch]]:
    """A page in a browser context of its own, closed however the test ends; once the block has run through,
    any console or page error it saw (bar those the test allowed) fails the test."""
    context = browser.new_context(viewport={"width": width, "height": 900}, base_url=base)
    try:
        page = context.new_page()
        watch = Watch()
        page.on("console", watch.console)
        page.on("pageerror", watch.page_error)
        page.set_default_timeout(10_000)
        yield page, watch
    finally:
        context.close()
    assert not watch.problems, "\n".join(watch.problems)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the page's screenshots go: pytest's temporary folder, never the repository."""
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def watched(browser: object, server: str) -> Iterator[tuple[object, Watch]]:
    """A page on the page's URL, ready (model card loaded); fails the test on any console or page error."""
    with _opened(browser, server) as (page, watch):
        page.goto("/")
        page.wait_for_selector("#metrics-table")
        yield page, watch


def _predict(page: object) -> dict:
    """Press Predict CLV; returns the request body and the reply."""
    with page.expect_response("**/predict/clv?curve=true") as reply:
        page.click("#predict")
    response = reply.value
    return {"body": response.request.post_data_json, "status": response.status, "json": response.json()}


def _no_object_object(page: object) -> None:
    assert "[object " not in page.inner_text("body"), "something was shown as [object ...]"


def test_default_customer_is_the_readme_example_sent_once(watched, server, example, shots: Path) -> None:
    page, _ = watched
    assert page.locator("#products .row").count() == 1
    assert page.locator("#transactions .row").count() == 1
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
                 .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map((e) => e.id)"""
    )
    assert unlabelled == []

    sent = _predict(page)
    assert sent["status"] == 200
    assert len(sent["body"]["products"]) == 1 and len(sent["body"]["transactions"]) == 1
    direct = httpx.post(f"{server}/predict/clv", json=example).json()
    assert sent["json"]["predicted_clv"] == direct["predicted_clv"]
    assert sent["json"]["clv_interval"] == direct["clv_interval"]

    value = page.inner_text("#clv-value")
    assert MONEY.match(value), value
    assert f"{abs(direct['predicted_clv']):,.2f}" in value
    interval = page.inner_text("#clv-interval")
    assert f"{abs(direct['clv_interval']['low']):,.2f}" in interval
    assert f"{abs(direct['clv_interval']['high']):,.2f}" in interval
    assert page.locator("#interval-chart svg rect.band").count() == 1
    bars = page.locator("#drivers-chart svg rect.bar")
    assert bars.count() >= len(direct["drivers"]) > 0
    assert page.locator("#drivers-chart svg rect.bar.up, #drivers-chart svg rect.bar.down").count() == len(
        direct["drivers"]
    )
    assert direct["model_version"] in page.inner_text("#clv-model")
    assert "12 months" in page.inner_text("#result")
    assert re.search(r"\d+%", page.inner_text("#clv-confidence"))
    churn = page.inner_text("#clv-churn")
    shown = float(re.search(r"(\d+)% chance of leaving", churn).group(1))
    assert abs(shown - direct["churn_probability"] * 100) <= 0.5 and "within 12 months" in churn, churn
    _no_object_object(page)
    page.screenshot(path=shots / "page-1280.png", full_page=True)


def test_the_answer_shows_each_horizon_and_the_curve_the_api_gives(watched, server, example) -> None:
    """The page asks for the curve: the horizons' table shows the values the API gives, says which are
    extrapolated as the card does, and the chart marks each horizon on the curve."""
    page, _ = watched
    sent = _predict(page)
    direct = httpx.post(f"{server}/predict/clv", params={"curve": "true"}, json=example).json()
    assert sent["json"]["horizons"] == direct["horizons"] and len(direct["horizons"]) == 3
    rows = page.locator("#horizons-table tbody tr")
    assert rows.count() == len(direct["horizons"])
    judged = {h["months"]: h["judged"] for h in httpx.get(f"{server}/model").json()["horizons"]}
    for i, horizon in enumerate(direct["horizons"]):
        text = rows.nth(i).inner_text()
        assert f"{abs(horizon['clv']):,.2f}" in text and f"{horizon['months']} months" in text, text
        assert ("judged on realized" if judged[horizon["months"]] else "extrapolated") in text, text
    assert page.locator("#curve-chart svg polyline.cumulative").count() == 1
    assert page.locator("#curve-chart svg circle.mark").count() == len(direct["horizons"])
    _no_object_object(page)


@pytest.mark.parametrize("profile", PROFILES)
def test_example_profiles_load_and_score(watched, profile: str) -> None:
    page, _ = watched
    page.click(f"[data-profile={profile}]")
    assert page.get_attribute(f"[data-profile={profile}]", "aria-pressed") == "true"
    sent = _predict(page)
    assert sent["status"] == 200, sent["json"]
    body = sent["body"]
    assert page.locator("#products .row").count() == len(body["products"])
    assert page.locator("#transactions .row").count() == len(body["transactions"])
    if profile == "new":
        assert body["products"] == [] and body["transactions"] == []
    else:
        assert body["transactions"] and all(
            "2024-01-01" <= t["transaction_date"] <= "2024-12-31" for t in body["transactions"]
        )
    if profile == "mortgage":
        assert any(p["product_type"] == "Mortgage" and p["balance"] >= 100_000 for p in body["products"])
    assert str(body["customer_id"]) in page.inner_text("#result")
    assert MONEY.match(page.inner_text("#clv-value"))
    assert page.locator("#interval-chart svg rect.band").count() == 1
    _no_object_object(page)


def test_client_checks_stop_a_bad_age_before_sending(watched) -> None:
    page, _ = watched
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url) if "/predict/" in request.url else None)
    page.fill("#c-age", "15")
    page.click("#predict")
    error = page.locator(".f-age .error")
    assert "at least 18" in error.inner_text()
    assert error.get_attribute("data-source") == "client"
    assert page.get_attribute("#c-age", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "c-age"
    assert sent == []


def test_api_messages_appear_beside_the_field_they_name(watched) -> None:
    page, watch = watched
    watch.allow(422)
    # Age: drop the page's own bound so the request reaches the API, which refuses it.
    page.evaluate("document.querySelector('#c-age').removeAttribute('min')")
    page.fill("#c-age", "15")
    sent = _predict(page)
    assert sent["status"] == 422
    error = page.locator(".f-age .error")
    assert error.get_attribute("data-source") == "api"
    assert "greater than or equal to 18" in error.inner_text()
    assert "age" in page.inner_text("#form-summary").lower()

    # A transaction dated after the as-of date, past the page's own date bound.
    page.fill("#c-age", "35")
    page.fill("#c-as_of", "2023-06-01")
    page.evaluate("document.querySelector('#transactions [data-key=transaction_date]').removeAttribute('max')")
    sent = _predict(page)
    assert sent["status"] == 422
    assert sent["json"]["detail"][0]["field"] == "transactions[0].transaction_date"
    error = page.locator("#transactions .row").first.locator(".f-transaction_date .error")
    assert error.get_attribute("data-source") == "api"
    assert "after the as-of date 2023-06-01" in error.inner_text()
    assert "Transaction 1 · Date" in page.inner_text("#form-summary")
    assert page.get_attribute("#transactions [data-key=transaction_date]", "aria-invalid") == "true"
    _no_object_object(page)


def test_rows_are_added_and_removed_once_by_keyboard(watched, example) -> None:
    page, _ = watched
    products = page.locator("#products .row")
    assert products.count() == 1
    page.focus("#add-product")
    page.keyboard.press("Enter")
    assert products.count() == 2
    assert page.evaluate("document.activeElement.dataset.key") == "product_type"
    products.nth(1).locator("button.remove").press("Enter")
    assert products.count() == 1
    assert "1 of at most 50" in page.inner_text("#products-count")

    transactions = page.locator("#transactions .row")
    page.click("#add-transaction")
    page.click("#add-transaction")
    assert transactions.count() == 3
    transactions.nth(0).locator("button.remove").click()
    transactions.nth(0).locator("button.remove").click()
    assert transactions.count() == 1
    page.fill("#transactions [data-key=transaction_date]", "2024-01-01")
    page.fill("#transactions [data-key=amount]", "1000")
    sent = _predict(page)
    assert sent["status"] == 200
    assert len(sent["body"]["products"]) == 1 and len(sent["body"]["transactions"]) == 1

    # Pasted JSON replaces the rows, never adds to them; JSON that is not a customer says why.
    page.click("#json-panel summary")
    page.fill("#json-text", json.dumps({**example, "transactions": example["transactions"] * 2}))
    page.click("#json-load")
    assert products.count() == 1 and transactions.count() == 2
    page.fill("#json-text", "[1, 2]")
    page.click("#json-load")
    assert "one customer object" in page.inner_text("#json-err")
    assert products.count() == 1 and transactions.count() == 2


def test_model_card_shows_metrics_and_charts(watched, server) -> None:
    page, _ = watched
    card = httpx.get(f"{server}/model").json()
    table = page.inner_text("#metrics-table")
    for words in ("Normalized Gini", "Decile MAPE", "Spearman", "Model", "Last 12 months repeated", "Training mean"):
        assert words in table
    assert f"{card['metrics']['model']['normalized_gini']:.3f}" in table
    assert ("Oracle" in table) == (card["metrics"].get("oracle") is not None)
    assert card["version"] in page.inner_text("#model-card")
    assert page.locator("#decile-chart svg rect.bar.predicted").count() == len(card["deciles"])
    assert page.locator("#decile-chart svg rect.bar.actual").count() == len(card["deciles"])
    assert page.locator("#importance-chart svg rect.bar").count() == min(10, len(card["importance"]))
    assert "_" not in page.text_content("#importance-chart"), "feature names are shown in words"
    churn = page.inner_text("#churn-table")
    for name in ("auc", "brier", "brier_skill"):
        assert f"{card['churn']['model'][name]:.3f}" in churn, name
    assert f"{card['churn']['model']['ece'] * 100:.1f}%" in churn
    bins = page.locator("#reliability-table tbody tr")
    assert bins.count() == len(card["churn"]["model"]["reliability"])
    rows = page.locator("#horizons-metrics tbody tr")
    assert rows.count() == len(card["horizons"]) >= 3
    for i, horizon in enumerate(card["horizons"]):
        text = rows.nth(i).inner_text()
        if horizon["judged"]:
            assert f"{horizon['model']['normalized_gini']:.3f}" in text, text
            assert f"{horizon['baseline_annuity']['normalized_gini']:.3f}" in text, text
        else:
            assert "extrapolated" in text, text
    _no_object_object(page)


def test_every_model_feature_has_words(watched) -> None:
    page, _ = watched
    labels = page.evaluate("(names) => names.map((n) => window.clvPage.featureLabel(n))", list(FEATURE_NAMES))
    assert all("_" not in label for label in labels), [
        n for n, lab in zip(FEATURE_NAMES, labels, strict=True) if "_" in lab
    ]
    assert len(set(labels)) == len(labels), "two features share a label"


def test_rate_limit_and_network_errors_are_clear(watched) -> None:
    page, watch = watched
    watch.allow(429, "net::ERR_FAILED")
    limited = json.dumps({"error": "Rate limit exceeded: 120 per 1 minute"})
    page.route(
        "**/predict/clv?curve=true",
        lambda route: route.fulfill(
            status=429, body=limited, headers={"Retry-After": "12"}, content_type="application/json"
        ),
    )
    page.click("#predict")
    message = page.locator("#result .notice")
    message.wait_for()
    assert "Rate limit" in message.inner_text() and "12 s" in message.inner_text()
    page.unroute("**/predict/clv?curve=true")
    page.route("**/predict/clv?curve=true", lambda route: route.abort())
    page.click("#predict")
    expect(page.locator("#result")).to_contain_text("Could not reach", timeout=10_000)
    _no_object_object(page)


def test_a_service_without_a_model_says_so(browser, unready_server: ApiProcess) -> None:
    with _opened(browser, unready_server.ready(503)) as (page, watch):
        watch.allow(503)
        page.goto("/")
        banner = page.locator("#banner .notice")
        banner.wait_for()
        assert "not ready" in banner.inner_text()
        assert "no model" in banner.inner_text()
        page.click("#predict")
        expect(page.locator("#result")).to_contain_text("not ready", timeout=10_000)
        assert "Try again" in page.inner_text("#result")
        _no_object_object(page)


def test_narrow_screen_fits_375px(browser, server, shots: Path) -> None:
    with _opened(browser, server, width=375) as (page, _):
        page.goto("/")
        page.wait_for_selector("#metrics-table")
        page.click("[data-profile=mortgage]")
        assert _predict(page)["status"] == 200
        page.wait_for_selector("#drivers-chart svg")
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the page is {overflow}px wider than a 375px screen"
        assert page.locator("#decile-chart svg rect.bar").count() > 0
        page.screenshot(path=shots / "page-375.png", full_page=True)


def test_the_api_docs_render_offline(browser, server) -> None:
    """/docs draws the OpenAPI page from files the service serves itself (the machines may have no internet)."""
    with _opened(browser, server) as (page, _):
        outside: list[str] = []
        page.on("request", lambda request: None if request.url.startswith(server) else outside.append(request.url))
        page.goto("/docs")
        page.wait_for_selector(".swagger-ui .info .title")
        assert "Bank CLV service" in page.inner_text(".swagger-ui .info .title")
        assert page.locator(".opblock-summary-path", has_text="/predict/clv").count() >= 1
    assert not outside, f"/docs fetched from outside the service: {outside}"


def _options(page: object, selector: str) -> list[str]:
    """The values a select offers, without its "(not given)"."""
    return [v for v in page.locator(selector).first.locator("option").evaluate_all("os => os.map((o) => o.value)") if v]


def _array(schema: dict) -> dict:
    """The list alternative of a nullable list property."""
    return next(s for s in schema.get("anyOf", [schema]) if s.get("type") == "array")


def test_the_form_reads_the_real_openapi_document(watched, server) -> None:
    """Enumerations, bounds, list limits and the example as the page read them are those of clv/data/schema.py."""
    page, _ = watched
    contract = page.evaluate("window.clvPage.contract()")
    assert contract["limits"] == {
        "products": MAX_PRODUCTS,
        "transactions": MAX_TRANSACTIONS,
        "ledger": MAX_LEDGER_MONTHS,
    }
    assert contract["example"] == EXAMPLE
    changed = page.evaluate(
        "() => { window.clvPage.contract().limits.products = 1; return window.clvPage.contract(); }"
    )
    assert changed == contract, "the page hands out a copy of its contract, never the contract itself"
    for selector, enum in (
        ("#c-region", Region),
        ("#c-acquisition_channel", AcquisitionChannel),
        ("#products [data-key=product_type]", ProductType),
        ("#products [data-key=status]", ProductStatus),
        ("#transactions [data-key=transaction_type]", TransactionType),
        ("#transactions [data-key=channel]", Channel),
    ):
        assert _options(page, selector) == [m.value for m in enum], selector
    assert page.get_attribute("#c-customer_id", "max") == str(MAX_ID)
    assert page.get_attribute("#c-age", "min") == "18" and "18 to 120" in page.inner_text(".f-age .hint")
    assert page.get_attribute("#c-region", "required") is not None
    assert page.get_attribute("#c-join_date", "required") is None
    assert page.get_attribute("#c-join_date", "type") == "date"
    requested = httpx.get(f"{server}/openapi.json").json()["components"]["schemas"]["TransactionIn"]["required"]
    for key in ("transaction_date", "amount", "transaction_type", "channel"):
        field = page.locator(f"#transactions [data-key={key}]").first
        assert (field.get_attribute("required") is not None) == (key in requested), key


def test_a_change_in_the_openapi_document_reaches_the_form(browser, server) -> None:
    """The document served with a region more, at most 3 products, another income in the example, a higher
    minimum age and a required channel: the form follows it, which a hand copy in the page would not."""
    document = httpx.get(f"{server}/openapi.json").json()
    schemas = document["components"]["schemas"]
    schemas["Region"]["enum"].append("Central")
    customer = schemas["CustomerIn"]
    _array(customer["properties"]["products"])["maxItems"] = 3
    customer["examples"][0]["income"] = 91234
    customer["properties"]["age"]["minimum"] = 21
    schemas["TransactionIn"]["required"].append("channel")

    with _opened(browser, server) as (page, _):
        served: list[str] = []
        page.route("**/openapi.json", lambda route: served.append(route.request.url) or route.fulfill(json=document))
        sent: list[str] = []
        page.on("request", lambda request: sent.append(request.url) if "/predict/" in request.url else None)
        page.goto("/")
        page.wait_for_selector("#metrics-table")
        assert served, "the page did not ask for /openapi.json"

        assert "Central" in _options(page, "#c-region")
        page.select_option("#c-region", "Central")
        assert page.input_value("#c-income") == "91234"
        assert page.get_attribute("[data-profile=readme]", "aria-pressed") == "true"
        assert "21 to 120" in page.inner_text(".f-age .hint")
        assert page.get_attribute("#transactions [data-key=channel]", "required") is not None
        assert "(optional)" not in page.inner_text("#transactions .f-channel label")

        page.fill("#c-age", "19")
        page.click("#predict")
        assert "at least 21" in page.inner_text(".f-age .error")
        assert sent == []

        assert "1 of at most 3" in page.inner_text("#products-count")
        page.click("#add-product")
        page.click("#add-product")
        assert page.locator("#products .row").count() == 3
        assert "3 of at most 3" in page.inner_text("#products-count")
        assert page.is_disabled("#add-product")
        page.click("#json-panel summary")
        page.fill("#json-text", json.dumps({**EXAMPLE, "products": EXAMPLE["products"] * 4}))
        page.click("#json-load")
        assert "products: at most 3 allowed, got 4" in page.inner_text("#json-err")
        assert page.locator("#products .row").count() == 3


@pytest.mark.parametrize("failure", ["abort", "500", "unreadable"])
def test_without_the_openapi_document_there_is_no_form(browser, server, failure: str) -> None:
    """/openapi.json unreachable, failing or not describing the request: the banner says so, no half-built form,
    the model card still loads, and the form appears once the document can be read."""
    with _opened(browser, server) as (page, watch):
        if failure == "abort":
            watch.allow("net::ERR_FAILED")
            page.route("**/openapi.json", lambda route: route.abort())
        elif failure == "500":
            watch.allow(500)
            page.route("**/openapi.json", lambda route: route.fulfill(status=500, json={"detail": "boom"}))
        else:
            page.route("**/openapi.json", lambda route: route.fulfill(json={"openapi": "3.1.0", "paths": {}}))
        page.goto("/")
        page.wait_for_selector("#metrics-table")
        banner = page.locator("#banner .notice")
        assert banner.count() == 1, "the model card's success must not hide the contract's notice"
        text = banner.inner_text()
        assert "/openapi.json" in text and "form is not available" in text
        assert {"abort": "Could not reach", "500": "answered 500: boom", "unreadable": "CustomerIn"}[failure] in text
        assert page.is_hidden("#customer-form") and page.is_hidden("#examples")
        assert page.locator("#customer-form [data-key]").count() == 0
        assert "once the service's description" in page.inner_text("#form-wait")
        assert page.evaluate("window.clvPage.contract()") is None
        _no_object_object(page)

        page.unroute("**/openapi.json")
        if failure == "unreadable":  # the same document would fail again: no retry, a reload
            assert banner.locator("button").count() == 0
            page.reload()
            page.wait_for_selector("#metrics-table")
        else:
            banner.get_by_role("button", name="Check now").click()
        page.wait_for_selector("#customer-form:not([hidden])")
        assert page.is_hidden("#banner") and page.is_hidden("#form-wait")
        assert page.input_value("#c-income") == str(EXAMPLE["income"])
        assert page.locator("#products .row").count() == 1


# ---- the serving version, generated data, input drift ----------------------------------------------------------
SYNTHETIC = "Trained on a synthetic bank (generated data), not on real customers"


def _pause_clock(page: object) -> None:
    """Stop the page's (installed) clock a second from now: its timers fire only when a test moves it on."""
    page.clock.pause_at(page.evaluate("Date.now()") / 1000 + 1)


def _customers(count: int, first_id: int) -> list[dict]:
    """The README customer, `count` times, with other ids, ages and incomes."""
    return [
        {**EXAMPLE, "customer_id": first_id + i, "age": 25 + i % 50, "income": 30_000 + 1_000 * i} for i in range(count)
    ]


def _send(base: str, customers: list[dict]) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        for customer in customers:
            assert client.post("/predict/clv", json=customer).status_code == 200


def test_the_header_shows_the_version_that_health_reports(watched, server) -> None:
    page, _ = watched
    health = httpx.get(f"{server}/health").json()
    expect(page.locator("#serving-version")).to_have_text(health["model_version"], timeout=10_000)
    assert health["model_version"] in page.inner_text("#model-status")
    # a tab shown again asks at once, without waiting for the next look
    with page.expect_response("**/health") as reply:
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    assert reply.value.json()["model_version"] == page.inner_text("#serving-version")


def test_a_model_of_generated_data_says_so_beside_its_card_and_predictions(watched, server, loaded) -> None:
    page, _ = watched
    assert loaded.metadata.synthetic_data and httpx.get(f"{server}/health").json()["synthetic_data"]
    assert SYNTHETIC in page.inner_text("#card-synthetic")
    assert page.is_visible("#card-synthetic") and page.is_visible("#status-synthetic")
    assert _predict(page)["status"] == 200
    assert SYNTHETIC in page.inner_text("#result-synthetic")
    assert page.is_visible("#result-synthetic")


def test_a_model_of_a_real_bank_has_no_generated_data_badge(browser, server) -> None:
    """/health and /model as a model trained on a real bank would answer them: synthetic_data false."""
    health = httpx.get(f"{server}/health").json() | {"synthetic_data": False}
    card = httpx.get(f"{server}/model").json() | {"synthetic_data": False}
    with _opened(browser, server) as (page, _):
        page.route("**/health", lambda route: route.fulfill(json=health))
        page.route("**/model", lambda route: route.fulfill(json=card))
        page.goto("/")
        page.wait_for_selector("#metrics-table")
        expect(page.locator("#serving-version")).to_have_text(health["model_version"], timeout=10_000)  # /health read
        assert _predict(page)["status"] == 200
        assert page.locator("#card-synthetic, #status-synthetic, #result-synthetic").count() == 0
        assert "synthetic" not in page.inner_text("body").lower()
        assert "not on real customers" not in page.inner_text("body")


def test_drift_waits_for_50_customers_then_shows_the_most_drifted(browser, promotable: ApiProcess) -> None:
    base = promotable.ready()
    assert httpx.get(f"{base}/model").json()["drift"] is None, "another test scored 50 customers on this server"
    with _opened(browser, base) as (page, _):
        page.clock.install()
        models: list[str] = []
        page.on("request", lambda request: models.append(request.url) if request.url.endswith("/model") else None)
        page.goto("/")
        _pause_clock(page)
        page.wait_for_selector("#drift-body > *")
        drift = page.locator("#drift")
        assert "Not enough recent requests yet" in drift.inner_text()
        assert "population stability index" in drift.inner_text()
        assert "below 0.1 is stable, 0.1 to 0.25 a moderate shift, above 0.25 a significant one" in drift.inner_text()

        # 59 customers straight to the service, the 60th from the page
        _send(base, _customers(59, 70_000))
        loads = len(models)
        assert _predict(page)["status"] == 200
        assert len(models) == loads, "the card was read again at once: at most every 30 s after predictions"
        assert "Not enough" in drift.inner_text()
        page.clock.fast_forward(31_000)
        page.wait_for_selector("#drift-rows")
        served = httpx.get(f"{base}/model").json()["drift"]
        assert served["rows"] >= 60
        assert f"the {served['rows']} customers scored most recently" in page.inner_text("#drift-rows")
        assert f"PSI {served['prediction']:.3f}" in page.inner_text("#drift-prediction")

        # the most drifted features, most first, in words, each with its band
        features = sorted(served["features"].items(), key=lambda item: -item[1])
        shown = features[:8]
        assert page.locator("#drift-chart svg rect.bar.psi").count() == len(shown)
        labels = page.evaluate("(names) => names.map((n) => window.clvPage.featureLabel(n))", [n for n, _ in shown])
        chart = page.get_attribute("#drift-chart svg", "aria-label")
        for label, (_, psi) in zip(labels, shown, strict=True):
            band = "significant" if psi > 0.25 else "moderate" if psi >= 0.1 else "stable"
            assert f"{label} {psi:.3f} {band}" in chart
        assert chart.index(labels[0]) < chart.index(labels[-1])
        texts = page.locator("#drift-chart svg text").all_text_contents()
        assert all("_" not in text for text in texts), texts
        assert page.locator("#drift-table tbody tr").count() == len(features)
        _no_object_object(page)

        # five more, then the button reads the card again at once
        _send(base, _customers(5, 80_000))
        page.click("#drift-refresh")
        expect(page.locator("#drift-rows")).to_contain_text(f"the {served['rows'] + 5} customers", timeout=10_000)
        assert page.evaluate("document.activeElement.id") == "drift-refresh"


def test_a_newly_promoted_model_is_shown_announced_and_the_old_prediction_marked(
    browser, promotable: ApiProcess, loaded: artifacts.LoadedModel
) -> None:
    """A new version promoted on disk while the page is open: the service takes it up by itself, and the page,
    at its next look at /health, shows the new version, reloads the card, says so, and marks the prediction it
    shows as made by the model before."""
    base = promotable.ready()
    old = httpx.get(f"{base}/health").json()["model_version"]
    with _opened(browser, base) as (page, _):
        page.clock.install()
        page.goto("/")
        _pause_clock(page)
        page.wait_for_selector("#metrics-table")
        expect(page.locator("#serving-version")).to_have_text(old, timeout=10_000)
        assert _predict(page)["json"]["model_version"] == old
        assert page.is_hidden("#result-older")

        new = resave(loaded, promotable.models).name.removeprefix(artifacts.PREFIX)
        wait_until(
            lambda: httpx.get(f"{base}/health").json()["model_version"] == new, f"the service taking up {new}", 10
        )

        page.clock.fast_forward(16_000)  # the page's next look at /health
        expect(page.locator("#serving-version")).to_have_text(new, timeout=10_000)
        expect(page.locator("#card-body")).to_contain_text(new, timeout=10_000)
        assert old not in page.inner_text("#card-body dl.facts")
        assert f"model {new} has taken over from {old}" in page.inner_text("#version-note")
        page.clock.run_for(100)  # announce() writes to its live region after a moment
        expect(page.locator("#announce")).to_contain_text(new, timeout=10_000)
        assert f"version {new}, in place of {old}" in page.text_content("#announce")
        older = page.locator("#result-older")
        assert older.is_visible()
        assert f"Made by model {old}, which no longer serves: model {new} does now" in older.inner_text()
        assert "an older model" in page.inner_text("#clv-model")

        assert _predict(page)["json"]["model_version"] == new
        assert page.is_hidden("#result-older") and "older" not in page.inner_text("#clv-model")


# ---- the Portfolio view ---------------------------------------------------------------------------


def _portfolio_view(page: object) -> None:
    page.click("#view-portfolio")
    page.wait_for_selector("#portfolio-horizons")
    assert page.locator("#customer-view").is_hidden()


def test_the_portfolio_view_shows_what_get_portfolio_says(watched, server) -> None:
    page, _ = watched
    _portfolio_view(page)
    data = httpx.get(f"{server}/portfolio").json()
    rows = page.locator("#portfolio-horizons tbody tr")
    assert rows.count() == len(data["horizons"])
    for i, h in enumerate(data["horizons"]):
        text = rows.nth(i).inner_text()
        assert f"{abs(h['total']):,.2f}" in text and f"{abs(h['low']):,.2f}" in text, text
    assert f"{data['value_at_risk']:,.2f}" in page.inner_text("#portfolio-var")
    assert f"{data['deciles'][0]['share'] * 100:.1f}%" in page.inner_text("#portfolio-top")
    assert page.locator("#concentration-chart svg circle.mark").count() == len(data["deciles"])
    assert page.locator("#segment-chart rect.bar.up").count() == len(data["segments"]["region"])
    page.select_option("#segment-kind", "product_mix")
    assert page.locator("#segment-chart rect.bar.up").count() == len(data["segments"]["product_mix"])
    first = data["segments"]["product_mix"][0]
    assert page.get_attribute(f"#segment-chart rect.bar.down[data-segment='{first['segment']}']", "data-key") == (
        "value_at_risk"
    )
    table = page.locator("#at-risk-table tbody tr")
    assert table.count() == min(20, len(data["at_risk"]))
    top = data["at_risk"][0]
    assert table.first.get_attribute("data-customer") == str(top["customer_id"])
    assert f"{top['value_at_risk']:,.2f}" in table.first.inner_text()
    page.click("#at-risk-table [data-sort=customer_id]")
    lowest = min(r["customer_id"] for r in data["at_risk"])
    assert page.locator("#at-risk-table tbody tr").first.get_attribute("data-customer") == str(lowest)
    page.locator("#at-risk-table tbody tr").first.click()
    drivers = page.inner_text(f"#drivers-{lowest}")
    shown = next(r for r in data["at_risk"] if r["customer_id"] == lowest)
    assert len(drivers.splitlines()) == len(shown["drivers"]) > 0
    page.click("#view-customer")
    assert page.locator("#portfolio-panel").is_hidden() and page.locator("#customer-view").is_visible()
    _no_object_object(page)


def test_the_portfolio_view_fits_375px(browser, server, shots: Path) -> None:
    with _opened(browser, server, width=375) as (page, _):
        page.goto("/")
        page.wait_for_selector("#metrics-table")
        _portfolio_view(page)
        page.wait_for_selector("#segment-chart svg")
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the page is {overflow}px wider than a 375px screen"
        page.screenshot(path=shots / "portfolio-375.png", full_page=True)


def _customers_shown(page: object) -> list[str]:
    """The customer ids of the at-risk list's rows, in the order shown."""
    return page.locator("#at-risk-table tbody tr.opens").evaluate_all("rows => rows.map((r) => r.dataset.customer)")


def test_the_at_risk_list_shows_20_rows_at_a_time_and_sorts_them_all(watched, server) -> None:
    page, _ = watched
    _portfolio_view(page)
    at_risk = httpx.get(f"{server}/portfolio").json()["at_risk"]
    assert len(at_risk) >= 80, "the test wants a list of more than twice the 40 rows it shows"
    ids = [str(r["customer_id"]) for r in sorted(at_risk, key=lambda r: (-r["value_at_risk"], r["customer_id"]))]
    ascending = sorted(at_risk, key=lambda r: (r["value_at_risk"], r["customer_id"]))
    lowest_first = [str(r["customer_id"]) for r in ascending]
    assert _customers_shown(page) == ids[:20]
    assert page.inner_text("#at-risk-count") == f"Showing 20 of {len(at_risk)}."

    page.click("#at-risk-more")
    assert _customers_shown(page) == ids[:40]
    assert page.evaluate("document.activeElement.dataset.customer") == ids[20], "focus goes to the first new row"

    # a sort orders the whole list, then shows as many rows as before: the 40 lowest of all, none of those shown
    page.click("#at-risk-table [data-sort=value_at_risk]")  # sorted highest first: a click turns it around
    assert page.get_attribute("#at-risk-table th:has([data-sort=value_at_risk])", "aria-sort") == "ascending"
    assert _customers_shown(page) == lowest_first[:40]
    assert not set(lowest_first[:40]) & set(ids[:40])

    page.click("#at-risk-all")
    assert _customers_shown(page) == lowest_first
    assert page.locator("#at-risk-more, #at-risk-all").count() == 0
    assert page.inner_text("#at-risk-count") == f"Showing {len(at_risk)} of {len(at_risk)}."


# Each table shown in `panel` (its details opened): its width, the room its scrolling wrapper (or the card) gives it,
# how far its wrapper scrolls, and its edges against the card's inner edges.
TABLES_AGAINST_CARDS = """(panel) => {
  for (const details of document.querySelectorAll(`${panel} details`)) details.open = true;
  return [...document.querySelectorAll(`${panel} table`)].filter((t) => t.getClientRects().length).map((t) => {
    const card = t.closest(".panel"), room = t.closest(".table-wrap") || card;
    const box = card.getBoundingClientRect(), edge = card.clientLeft, own = t.getBoundingClientRect();
    return { id: t.id || t.closest("details, section").querySelector("summary, h3, h2").textContent,
      width: own.width, scrollWidth: t.scrollWidth, room: room.clientWidth,
      overflow: room.scrollWidth - room.clientWidth,
      left: own.left - (box.left + edge), right: box.left + edge + card.clientWidth - own.right };
  });
}"""


def _tables_fit_their_cards(page: object, panel: str) -> list[str]:
    """The ids of the tables shown in `panel`, each checked to fit its card whole: no column cut off or to
    scroll to."""
    tables = page.evaluate(TABLES_AGAINST_CARDS, panel)
    for t in tables:
        assert max(t["width"], t["scrollWidth"]) <= t["room"] + 0.5 and t["overflow"] <= 0, t
        assert t["left"] >= -0.5 and t["right"] >= -0.5, t
    return [t["id"] for t in tables]


@pytest.mark.parametrize("width", [1280, 375])
def test_no_table_is_wider_than_its_card(browser, server, width: int, shots: Path) -> None:
    """The prediction's horizons and the portfolio's tables fit their cards at a laptop's width and a phone's."""
    with _opened(browser, server, width=width) as (page, _):
        page.goto("/")
        page.wait_for_selector("#metrics-table")
        page.click("[data-profile=mortgage]")
        assert _predict(page)["status"] == 200
        page.wait_for_selector("#curve-chart svg")
        assert "horizons-table" in _tables_fit_their_cards(page, "#result-panel")
        page.screenshot(path=shots / f"result-tables-{width}.png", full_page=True)
        _portfolio_view(page)
        page.wait_for_selector("#segment-chart svg")
        page.click("#at-risk-all")  # every row, the widest included
        shown = _tables_fit_their_cards(page, "#portfolio-panel")
        assert {"portfolio-horizons", "portfolio-deciles", "segment-table", "at-risk-table"} <= set(shown), shown
        page.screenshot(path=shots / f"portfolio-tables-{width}.png", full_page=True)


def test_without_a_scoring_run_the_portfolio_view_says_how_to_make_one(watched) -> None:
    page, watch = watched
    watch.allow(404)
    detail = "no scoring run in scores: `python model.py score` makes one"
    page.route("**/portfolio", lambda route: route.fulfill(status=404, json={"detail": detail}))
    page.click("#view-portfolio")
    page.wait_for_selector("#portfolio-missing")
    assert detail in page.inner_text("#portfolio-missing")


@pytest.fixture(scope="module")
def keyed_server(model_dir: Path, bank_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """The service with two keys made by `python api.py keys add`: an analyst's (clv:predict and clv:read, not
    clv:portfolio) and a teller's (clv:predict only)."""
    folder = tmp_path_factory.mktemp("keyed")
    made = {}
    for name, scopes in (("analyst", "clv:predict,clv:read"), ("teller", "clv:predict")):
        added = run_script(
            "api.py", "keys", "add", name, "--scopes", scopes, CLV_API_KEYS_FILE=str(folder / "api_keys.json")
        )
        assert added.returncode == 0, added.stderr
        made[name] = added.stdout.splitlines()[-1]
    server = ApiProcess(folder, CLV_MODEL_DIR=str(model_dir), CLV_DATA_DIR=str(bank_dir))
    try:
        yield server.ready(), made
    finally:
        server.stop()


def _sign_in(page: object, key: str) -> None:
    page.wait_for_selector("#sign-in:not([hidden])")
    assert "API key" in page.inner_text("#sign-in-why")
    page.fill("#api-key", key)
    with page.expect_navigation():
        page.click("#sign-in-button")


def test_the_page_signs_in_with_a_key_and_says_what_the_key_may_not_do(browser, keyed_server) -> None:
    base, made = keyed_server
    with _opened(browser, base) as (page, watch):
        watch.allow(401, 403)
        sent: list[str | None] = []
        page.on("request", lambda request: sent.append(request.headers.get("authorization")))
        page.goto("/")
        _sign_in(page, made["analyst"])
        page.wait_for_selector("#metrics-table")  # the card: clv:read
        assert page.is_hidden("#sign-in") and page.is_visible("#sign-out")
        assert _predict(page)["status"] == 200
        assert f"Bearer {made['analyst']}" in sent
        assert made["analyst"] not in page.inner_text("body")
        page.click("#view-portfolio")
        page.wait_for_selector("#portfolio-missing")
        words = page.inner_text("#portfolio-missing")
        assert "clv:portfolio" in words and "lacks" in words, words
        page.click("#view-customer")
        with page.expect_navigation():
            page.click("#sign-out")
        page.wait_for_selector("#sign-in:not([hidden])")
        assert page.evaluate("() => sessionStorage.length") == 0
        _sign_in(page, made["teller"])  # predictions, but no model card and no form's contract
        page.wait_for_selector("#card-refused")
        assert "clv:read" in page.inner_text("#card-refused")


def test_a_wrong_key_is_refused_and_asked_again(browser, keyed_server) -> None:
    base, _ = keyed_server
    with _opened(browser, base) as (page, watch):
        watch.allow(401)
        page.goto("/")
        _sign_in(page, "clv_not-a-key")
        page.wait_for_selector("#sign-in:not([hidden])")
        assert "refused the key" in page.inner_text("#sign-in-why")
        assert page.evaluate("() => sessionStorage.length") == 0
