"""What the dashboard's browser test and benchmark share: a headless Chromium from Debian.

Playwright drives the system `chromium` (`executable_path`), so nothing downloads a browser.
"""

import os
from contextlib import contextmanager

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("NABU_CHROMIUM", "/usr/bin/chromium")


@contextmanager
def browser():
    """A headless Chromium; its sandbox needs a non-root user, so root runs without it."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield instance
        finally:
            instance.close()


def new_page(instance, errors):
    """A page in a fresh context (cold cache) of a size that shows all four views; script
    errors are appended to `errors`. `page.context.close()` ends it."""
    context = instance.new_context(viewport={"width": 1300, "height": 1500})
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    return page
