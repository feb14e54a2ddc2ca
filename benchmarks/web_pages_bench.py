"""Web front end: what the dashboard and portal pages cost a browser (decision 033).

Starts one control plane (granian, one worker, a temporary SQLite store with one owner)
and loads each page in headless chromium (Playwright on /usr/bin/chromium), `--runs`
times with a cold cache (a fresh browser context each time) and once more warm (a
reload in the same context). From the browser's own timing API
(`performance.getEntriesByType`): requests per page, bytes transferred and decoded,
time to the first byte of the page, first paint and first contentful paint, DOM
interactive, load. Medians of the cold runs.

Besides the server-rendered pages (dashboard login and overview, portal home), it loads
two built single-page applications the control plane already serves, as the reference
for "a built SPA": Swagger UI (`/docs`) and GraphiQL (`/graphql`).

    .venv/bin/python benchmarks/web_pages_bench.py
    .venv/bin/python benchmarks/web_pages_bench.py --runs 9

Loopback only; bounded by the number of runs (about 1 s a page load).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

import httpx
from playwright.sync_api import Browser, sync_playwright

from portcullis.store.migrations import upgrade_to_head
from support.browser import CHROMIUM, DESKTOP
from support.servers import control_plane
from support.web import create_owner, dashboard_sign_in

OWNER = "bench@example.com"
PAGES = [
    # (label, path, needs a dashboard session, the element that shows it is ready)
    ("dashboard sign-in", "/dashboard/login", False, "form"),
    ("dashboard overview", "/dashboard/", True, "#traffic"),
    ("portal home", "/portal/", False, "main"),
    ("Swagger UI (SPA)", "/docs", False, ".swagger-ui .info"),
    ("GraphiQL (SPA)", "/graphql", False, ".graphiql-container"),
]
MEASURE = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource');
  const paint = Object.fromEntries(
    performance.getEntriesByType('paint').map(p => [p.name, p.startTime]));
  const sum = (key) => res.reduce((s, r) => s + (r[key] || 0), nav[key] || 0);
  return {
    requests: 1 + res.length,
    cached: res.filter(r => r.transferSize === 0).length,
    transfer: sum('transferSize'),
    encoded: sum('encodedBodySize'),
    decoded: sum('decodedBodySize'),
    first_paint: paint['first-paint'] ?? null,
    first_contentful_paint: paint['first-contentful-paint'] ?? null,
    response_start: nav.responseStart,
    dom_interactive: nav.domInteractive,
    load: nav.loadEventEnd,
  };
}"""


def session_cookie(base: str) -> dict[str, Any]:
    """A dashboard session cookie, from the sign-in form (outside the measured browser)."""
    with httpx.Client(base_url=base, timeout=10) as client:
        assert dashboard_sign_in(client, OWNER).status_code == 303
        return {"name": "pc_dashboard", "value": client.cookies["pc_dashboard"], "url": base}


def load(browser: Browser, base: str, path: str, session: bool, ready: str) -> dict[str, Any]:
    """One cold load (a fresh context: empty cache) and one warm reload of `path`."""
    context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    try:
        if session:
            context.add_cookies([session_cookie(base)])  # type: ignore[list-item]
        page = context.new_page()
        page.goto(f"{base}{path}", wait_until="load")
        page.wait_for_selector(ready)
        cold: dict[str, Any] = page.evaluate(MEASURE)
        page.reload(wait_until="load")
        page.wait_for_selector(ready)
        warm: dict[str, Any] = page.evaluate(MEASURE)
        return {"cold": cold, "warm": warm}
    finally:
        context.close()


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'store.db'}"
        asyncio.run(upgrade_to_head(url))
        create_owner(url, OWNER)
        with control_plane(url) as plane, sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
            print(f"chromium {browser.version}, {args.runs} cold loads per page (medians)\n")
            header = (
                f"{'page':<20} {'requests':>8} {'KiB transferred':>15} {'KiB decoded':>11} "
                f"{'TTFB ms':>7} "
                f"{'first paint ms':>14} {'FCP ms':>7} {'DOM interactive ms':>18} {'load ms':>8} "
                f"{'warm: requests / from cache / KiB':>34}"
            )
            print(header)
            print("-" * len(header))
            for label, path, session, ready in PAGES:
                runs = [load(browser, plane.url, path, session, ready) for _ in range(args.runs)]
                cold = [r["cold"] for r in runs]
                warm = runs[-1]["warm"]

                def m(key: str, runs_: list[dict[str, Any]] = cold) -> float:
                    value = median([r[key] for r in runs_])
                    return float("nan") if value is None else value

                print(
                    f"{label:<20} {m('requests'):>8.0f} {m('transfer') / 1024:>15.1f} "
                    f"{m('decoded') / 1024:>11.1f} {m('response_start'):>7.0f} "
                    f"{m('first_paint'):>14.0f} "
                    f"{m('first_contentful_paint'):>7.0f} {m('dom_interactive'):>18.0f} "
                    f"{m('load'):>8.0f} "
                    f"{warm['requests']:>14} / {warm['cached']} / {warm['transfer'] / 1024:.1f}"
                )
            browser.close()


if __name__ == "__main__":
    main()
