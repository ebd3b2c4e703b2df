"""First render of the dashboard's ring in headless Chromium (scripts/bench-dashboard).

usage: bench_render.py URL RUNS

Loads URL?demo=1000 (150,000 virtual nodes) and, as the baseline of the same run,
URL?demo=6 (900), RUNS times each, interleaved, each in a fresh browser context (cold cache).
"First render" is `window.__nabuRendered`: performance.now() when the page has fetched the
ring and drawn it, i.e. milliseconds since navigation started. Also reported: the ring JSON's
fetch (request start to last byte) and the longest main-thread task (Long Tasks API).
"""

import statistics
import sys

from common import browser, new_page

MEASURE = """() => {
    const ring = performance.getEntriesByType("resource").find((r) => r.name.includes("/api/v1/ring"));
    return {
        rendered: window.__nabuRendered,
        fetch: ring ? ring.responseEnd - ring.requestStart : null,
        bytes: ring ? ring.transferSize : null,
        longest: Math.max(0, ...(window.__longTasks || [])),
    };
}"""

# Installed before the page's own script runs, so every long task is seen.
OBSERVE_LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.__longTasks.push(entry.duration);
}).observe({ type: "longtask", buffered: true });
"""


def measure(instance, url, errors):
    page = new_page(instance, errors)
    try:
        page.add_init_script(OBSERVE_LONG_TASKS)
        page.goto(url)
        page.wait_for_function("window.__nabuRendered !== undefined", timeout=60_000)
        return page.evaluate(MEASURE)
    finally:
        page.context.close()


def summary(name, samples):
    rendered = [s["rendered"] for s in samples]
    fetch = [s["fetch"] for s in samples if s["fetch"] is not None]
    longest = [s["longest"] for s in samples]
    print(f"{name}: first render median {statistics.median(rendered):.0f} ms "
          f"(min {min(rendered):.0f}, max {max(rendered):.0f}); ring JSON fetch median "
          f"{statistics.median(fetch):.0f} ms, {samples[0]['bytes'] / 1e6:.2f} MB; longest task "
          f"median {statistics.median(longest):.0f} ms")
    return statistics.median(rendered)


def main():
    url, runs = sys.argv[1].rstrip("/"), int(sys.argv[2])
    errors = []
    large, small = [], []
    with browser() as instance:
        measure(instance, f"{url}/?demo=6", errors)  # warm the browser process, not measured
        for _ in range(runs):
            large.append(measure(instance, f"{url}/?demo=1000", errors))
            small.append(measure(instance, f"{url}/?demo=6", errors))
    assert not errors, errors
    thousand = summary("1,000 nodes (150,000 vnodes)", large)
    six = summary("6 nodes (900 vnodes), baseline", small)
    print(f"1,000-node first render: {thousand:.0f} ms = {thousand / six:.2f}x the 6-node ring "
          f"(target < 2000 ms)")


if __name__ == "__main__":
    main()
