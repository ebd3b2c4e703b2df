"""The dashboard against a real six-node `nabu up` cluster, in headless Chromium.

Run by `crates/nabu/tests/dashboard/mod.rs` with:
  NABU_DASHBOARD_URL   node 1's dashboard (http://host:port/)
  NABU_CLUSTER         the cluster file (load runs with `nabu put`)
  NABU_BIN             the `nabu` binary
  NABU_KILL_NODE       the node to SIGKILL, NABU_KILL_PID its pid, NABU_KILL_CONFIG its
                       node.toml (the test restarts it with `nabu serve`)
  NABU_SCREENSHOTS     where screenshots go

One function, checked in sequence (a browser start costs seconds on two cores). Every wait
is on a condition in the page, with a deadline; nothing sleeps to synchronise.
"""

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import browser, new_page

URL = os.environ["NABU_DASHBOARD_URL"]
CLUSTER = os.environ["NABU_CLUSTER"]
NABU = os.environ["NABU_BIN"]
KILL_NODE = int(os.environ["NABU_KILL_NODE"])
KILL_PID = int(os.environ["NABU_KILL_PID"])
KILL_CONFIG = Path(os.environ["NABU_KILL_CONFIG"])
SCREENSHOTS = Path(os.environ["NABU_SCREENSHOTS"])
LOAD_KEY = "dashboard/load-0"
# The page must show a SIGKILLed node down within this long.
DOWN_SHOWN_WITHIN_S = 5.0


class Load:
    """`nabu put` of a 4 MiB file in a loop on a thread, until stopped."""

    def __init__(self, workdir: Path):
        self.file = workdir / "load.bin"
        self.file.write_bytes(os.urandom(4 << 20))
        self.stop = threading.Event()
        self.progress = threading.Condition()
        self.puts = 0
        self.failure = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            key = f"dashboard/load-{self.puts % 4}"
            done = subprocess.run([NABU, "put", "--cluster", CLUSTER, key, str(self.file)],
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL)
            with self.progress:
                if done.returncode != 0:
                    self.failure = done.stderr
                else:
                    self.puts += 1
                self.progress.notify_all()
            if self.failure:
                return

    def wait_for_puts(self, count, timeout_s):
        """Waits until `count` puts have succeeded (fails on a failed put or the deadline)."""
        deadline = time.monotonic() + timeout_s
        with self.progress:
            while self.puts < count and self.failure is None:
                left = deadline - time.monotonic()
                assert left > 0, f"{self.puts} of {count} puts within {timeout_s} s"
                self.progress.wait(left)
        assert self.failure is None, f"nabu put failed: {self.failure}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def step(name):
    print(f"--> {name}", flush=True)


def screenshot(page, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def ring_painted(page):
    """Whether the ring canvas has paint in its band (the arcs), sampled around the circle."""
    return page.evaluate("""() => {
        const canvas = document.getElementById("ring");
        const context = canvas.getContext("2d");
        const ratio = canvas.width / canvas.clientWidth;
        const middle = canvas.width / 2, radius = (canvas.clientWidth / 2 - 47) * ratio;
        let painted = 0;
        for (let i = 0; i < 36; i++) {
            const angle = i / 36 * 2 * Math.PI;
            const x = Math.round(middle + radius * Math.cos(angle));
            const y = Math.round(middle + radius * Math.sin(angle));
            if (context.getImageData(x, y, 1, 1).data[3] > 0) painted++;
        }
        return painted;
    }""")


def main():
    errors = []
    with browser() as instance:
        page = new_page(instance, errors)
        page.goto(URL)

        step("the ring shows 900 virtual nodes of 6 nodes, drawn")
        page.wait_for_function("document.body.dataset.rendered === 'true'", timeout=20_000)
        assert page.inner_text("#ring-vnodes") == "900", page.inner_text("#ring-vnodes")
        assert page.inner_text("#ring-members") == "6"
        assert ring_painted(page) == 36, "every sampled angle of the ring band is painted"
        page.hover("#ring", position={"x": 260, "y": 260 - 200})
        page.wait_for_selector("#ring-tooltip:not([hidden])", timeout=5_000)
        tooltip = page.inner_text("#ring-tooltip")
        assert tooltip.startswith("node ") and "% of the ring" in tooltip, tooltip

        step("the topology shows 6 nodes, all up, and the live stream runs")
        page.wait_for_function(
            "document.querySelectorAll('#topology .node[data-state=up]').length === 6",
            timeout=20_000)
        assert page.locator("#topology .node").count() == 6
        page.wait_for_selector("#connection[data-state=live]", timeout=10_000)
        assert page.locator("#nodes tbody tr").count() == 6
        screenshot(page, "1-idle")

        step("metrics change while load runs")
        with Load(Path(tempfile.gettempdir())) as load:
            page.wait_for_function(
                "Number(document.getElementById('metric-in').dataset.value) > 100000",
                timeout=60_000)
            page.wait_for_function(
                "document.getElementById('metric-latency').textContent.match(/write \\d/)",
                timeout=30_000)
            screenshot(page, "2-load")
        assert load.failure is None, f"nabu put failed: {load.failure}"
        assert load.puts >= 1

        step("placement of a stored key: its stripes' 6 shards on 6 nodes")
        page.fill("#placement-key", LOAD_KEY)
        page.click("#placement button")
        page.wait_for_selector("#placement-result .stripe", timeout=10_000)
        first = page.locator("#placement-result .stripe").first
        assert first.locator(".chip").count() == 6, first.inner_text()
        assert "ec:4+2" in page.inner_text("#placement-result")
        screenshot(page, "3-placement")

        step(f"SIGKILL node {KILL_NODE}: shown down within {DOWN_SHOWN_WITHIN_S} s")
        os.kill(KILL_PID, signal.SIGKILL)
        killed = time.monotonic()
        page.wait_for_selector(f"#topology .node[data-id='{KILL_NODE}'][data-state=down]",
                               timeout=DOWN_SHOWN_WITHIN_S * 1000)
        shown_after = time.monotonic() - killed
        print(f"node {KILL_NODE} shown down {shown_after:.2f} s after SIGKILL", flush=True)
        page.wait_for_selector(f"#events li[data-kind=node_down][data-node='{KILL_NODE}']",
                               timeout=5_000)
        assert page.get_attribute(f"#nodes tr[data-id='{KILL_NODE}']", "data-state") == "down"
        screenshot(page, "4-node-down")

        step(f"writes while node {KILL_NODE} is down, then its restart: hint replay shows as links")
        with Load(Path(tempfile.gettempdir())) as load:
            load.wait_for_puts(3, timeout_s=60)
        with open(KILL_CONFIG.with_name("node.log"), "ab") as log:
            restarted = subprocess.Popen([NABU, "serve", "--config", str(KILL_CONFIG)],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            page.wait_for_selector(f"#topology .node[data-id='{KILL_NODE}'][data-state=up]",
                                   timeout=30_000)
            # The newest event about the node (the list is newest first) says it is up again.
            page.wait_for_function(
                f"document.querySelector(\"#events li[data-node='{KILL_NODE}']\")"
                ".dataset.kind === 'node_up'", timeout=5_000)
            # Hint replay sends the shards written meanwhile to the node: peer-plane traffic,
            # drawn as a link to it (kept on screen for 5 s after the burst). Attached, not
            # visible: a vertical or horizontal line has an empty bounding box.
            page.wait_for_selector(f"#topology .link[data-b='{KILL_NODE}'], "
                                   f"#topology .link[data-a='{KILL_NODE}']",
                                   state="attached", timeout=30_000)
            screenshot(page, "5-hint-replay")
        finally:
            restarted.terminate()
            restarted.wait(timeout=30)

    # Resource errors of the killed node's stream are not page errors; script errors are.
    assert not errors, f"errors in the page: {errors}"
    print("dashboard test passed", flush=True)


if __name__ == "__main__":
    sys.exit(main())
