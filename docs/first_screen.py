"""Screenshot a report's first screen (1440×900) in headless Chromium, as a reader sees it.

The README's image comes from the quick cadence sweep::

    recloop run cadence-sweep --quick --workers 2 --out runs/cadence-sweep-quick
    python docs/first_screen.py runs/cadence-sweep-quick/report.html docs/report-first-screen.png

Needs Playwright (``pip install playwright``) and a Chromium (``/usr/bin/chromium`` by default,
``--chromium PATH`` otherwise).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a report.html")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=args.chromium, headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(args.report.resolve().as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
        page.screenshot(path=str(args.out))
        browser.close()
    print(f"first screen: {args.out}")


if __name__ == "__main__":
    main()
