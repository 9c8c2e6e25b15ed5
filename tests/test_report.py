"""`model.py report`: one HTML file for the model's reviewers, run as the README says, opened in Chromium with the
network cut: it needs nothing from outside and logs no error."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.servers import run_script
from tests.test_page import CHROMIUM_ARGS


@pytest.fixture(scope="module")
def report(bank_dir: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp("report")
    for command in (
        ("score", "--data-dir", bank_dir, "--model-dir", model_dir, "--scores-dir", work / "scores"),
        ("backtest", "--data-dir", bank_dir, "--cutoffs", "2023-06-30", "--out", work / "backtest"),  # one training
        (
            "report",
            "--model-dir",
            model_dir,
            "--scores-dir",
            work / "scores",
            "--backtest",
            work / "backtest",
            "--out",
            work / "report.html",
        ),
    ):
        done = run_script("model.py", *command, "--quiet")
        assert done.returncode == 0, done.stderr
    return (work / "report.html").read_text()


def test_the_report_holds_the_card_the_backtest_the_drift_and_the_portfolio(report: str) -> None:
    for words in (
        "Held-out metrics against the baselines and the oracle",
        "Each horizon",
        "Reliability of the churn",
        "Backtest",
        "2023-06-30",
        "Drift of the latest scoring run",
        "Portfolio: run run_",
        "Value at risk",
        "By product mix",
        "most value at risk",
    ):
        assert words in report, words
    assert report.count('src="data:image/png;base64,') == 2  # the backtest's chart and the portfolio's


def test_the_report_contains_no_external_url(report: str) -> None:
    assert not re.search(r"https?://|(src|href)=\"//", report)


def test_the_report_opens_offline_without_a_console_error(report: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    path = tmp_path / "report.html"
    path.write_text(report)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(offline=True)
            page = context.new_page()
            problems, asked = [], []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: asked.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
            page.goto(path.as_uri())
            assert page.locator("img").count() == 2
            assert all(page.evaluate("[...document.images].map((i) => i.complete && i.naturalWidth > 0)"))
            assert page.locator("table").count() > 10
        finally:
            browser.close()
    assert problems == [] and asked == []
