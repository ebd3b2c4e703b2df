//! The dashboard in a real browser: `dashboard_test.py` drives Debian's headless `chromium`
//! with Playwright for Python against a real six-node cluster (ring, topology, live metrics
//! under load, placement, a SIGKILLed node shown down within 5 s, then restarted with
//! `nabu serve` and the hint replay to it drawn as a link) and saves screenshots to
//! `target/dashboard-screenshots`. `scripts/test` installs Playwright into
//! `target/dashboard-venv` (`NABU_DASHBOARD_PYTHON` names another interpreter) and
//! `chromium` from Debian (`NABU_CHROMIUM` names another browser).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{TestCluster, nabu_binary, run_reported, test_python};

/// The node the test SIGKILLs (the page is served by node 1).
const KILLED_NODE: u32 = 3;

/// The Python interpreter with Playwright installed.
fn python() -> PathBuf {
    test_python(
        "NABU_DASHBOARD_PYTHON",
        "target/dashboard-venv",
        "scripts/test creates it (python3 -m venv target/dashboard-venv && \
         target/dashboard-venv/bin/pip install -r crates/nabu/tests/dashboard/requirements.txt)",
    )
}

/// Where the screenshots go: `target/dashboard-screenshots` (beside this test's temp dir).
fn screenshots() -> PathBuf {
    let target_tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    target_tmp
        .parent()
        .unwrap_or(target_tmp)
        .join("dashboard-screenshots")
}

#[test]
fn dashboard_shows_the_ring_topology_live_metrics_and_a_killed_node() {
    let python = python();
    let cluster = TestCluster::up(6);
    let serving = &cluster.nodes[0];
    let killed = cluster
        .nodes
        .iter()
        .find(|node| node.id == KILLED_NODE)
        .expect("the cluster has the node to kill");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/dashboard_test.py");
    let mut test = Command::new(&python);
    test.arg(&script)
        .current_dir(script.parent().expect("the script's dir"))
        .env(
            "NABU_DASHBOARD_URL",
            format!("http://{}/", serving.http_addr),
        )
        .env("NABU_CLUSTER", cluster.cluster_file())
        .env("NABU_BIN", nabu_binary())
        .env("NABU_KILL_NODE", KILLED_NODE.to_string())
        .env("NABU_KILL_PID", killed.pid.to_string())
        .env("NABU_KILL_CONFIG", &killed.config)
        .env("NABU_SCREENSHOTS", screenshots())
        .env("TMPDIR", cluster.dir.path());
    run_reported(&mut test, "the dashboard test", "dashboard test passed");
}
