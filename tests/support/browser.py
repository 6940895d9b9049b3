"""The console in a real headless Chromium: Debian's ``chromium`` package driven by Playwright
(``executable_path``, never ``playwright install``: no browser is downloaded). Without it the
browser tests skip, saying so; under CI (``CI`` set) they fail instead.

``console_page`` opens ``/console/`` of a server and records what a person would not want to
see: console messages, page errors, Content-Security-Policy violations (a listener put in the
page before its own scripts) and dialogs (an ``alert`` from injected markup would be one).
``ConsolePage.shot(name)`` saves a screenshot in the screenshots folder: ``BATCHD_SCREENSHOTS``
when set (scripts/console-screenshots), else a temporary folder of the run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Dialog, Page, async_playwright

from batchd.app import App
from tests.support.ports import free_port
from tests.support.servers import own_server

CHROMIUM = Path(os.environ.get("BATCHD_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Run in the page before its scripts: every CSP violation is kept where the test reads it.
_WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


def require_chromium() -> Path:
    """Debian's chromium, or a skip (a failure under CI) saying how to get it."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/test-browser)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


def screenshots_dir() -> Path:
    chosen = os.environ.get("BATCHD_SCREENSHOTS")
    folder = Path(chosen) if chosen else Path(tempfile.gettempdir()) / "batchd-console-shots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class ConsolePage:
    """A page of the console with what it logged; ``page`` is Playwright's."""

    page: Page
    messages: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    async def shot(self, name: str) -> Path:
        path = screenshots_dir() / f"console-{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def csp_violations(self) -> list[str]:
        violations = await self.page.evaluate("window.__cspViolations")
        reported = [m for m in self.messages if "Content Security Policy" in m]
        return [*violations, *reported]


@asynccontextmanager
async def console_page(base_url: str) -> AsyncIterator[ConsolePage]:
    """A fresh Chromium showing ``base_url``/console/ (loaded: its first schema call done)."""
    executable = require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(executable), args=ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 1000})
            page = await context.new_page()
            await page.add_init_script(_WATCH_CSP)
            console = ConsolePage(page)
            page.on("console", lambda m: console.messages.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.errors.append(str(e)))

            async def dismiss(dialog: Dialog) -> None:
                console.dialogs.append(dialog.message)
                await dialog.dismiss()

            page.on("dialog", dismiss)
            await page.goto(f"{base_url}/console/")
            await page.wait_for_selector("body[data-ready=true]")
            yield console
        finally:
            await browser.close()


@asynccontextmanager
async def console_server(dsn: str, **settings: Any) -> AsyncIterator[tuple[App, str]]:
    """A batchd server of the test's own (on ``dsn``, ``settings`` over the test defaults)
    serving HTTP with the console on: the app and the HTTP base URL."""
    async with own_server(dsn, http_port=free_port(), console=True, **settings) as app:
        assert app.http is not None
        yield app, f"http://127.0.0.1:{app.http.port}"
