//! The S3 gateway against real clients: boto3, the AWS CLI and s3fs (and, in the heavy
//! suite, vLLM's Run:ai model streamer), run as the pytest suite in `tests/python` against a
//! real six-node cluster. `scripts/test` installs the clients into `target/s3-venv`
//! (`NABU_S3_PYTHON` names another interpreter).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{TestCluster, http_get, nabu_binary, run_reported, test_python};

/// The Python interpreter with the S3 clients installed.
fn python() -> PathBuf {
    test_python(
        "NABU_S3_PYTHON",
        "target/s3-venv",
        "scripts/test creates it (python3 -m venv target/s3-venv && target/s3-venv/bin/pip \
         install -r crates/nabu/tests/python/requirements.txt)",
    )
}

/// Runs the pytest suite on `endpoints`, only the tests `marker` selects.
fn pytest(cluster: &TestCluster, python: &Path, endpoints: &[String], marker: &str) {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    let mut pytest = Command::new(python);
    pytest
        .args(["-m", "pytest", "-v", "--durations=8", "-m", marker])
        .arg(&tests)
        .current_dir(&tests)
        .env("NABU_S3_ENDPOINTS", endpoints.join(","))
        .env("NABU_CLUSTER", cluster.cluster_file())
        .env("NABU_BIN", nabu_binary())
        .env("NABU_S3_PYTHON", python)
        .env("NABU_S3_STATE", cluster.dir.path().join("s3-state"))
        .env("TMPDIR", cluster.dir.path());
    // " passed": pytest ran a test (a marker that selects none fails the test).
    run_reported(&mut pytest, &format!("pytest -m '{marker}'"), " passed");
}

fn endpoints(cluster: &TestCluster, skip: &[u32]) -> Vec<String> {
    cluster
        .nodes
        .iter()
        .filter(|node| !skip.contains(&node.id))
        .map(|node| format!("http://{}", node.s3_addr.as_deref().expect("s3_addr")))
        .collect()
}

/// The sum over the cluster's nodes of the `/metrics` samples of `metric` whose labels
/// include every one of `labels` (`op="GetObject"`).
fn s3_metric(cluster: &TestCluster, metric: &str, labels: &[&str]) -> f64 {
    let mut sum = 0.0;
    for node in &cluster.nodes {
        let text = http_get(&node.http_addr, "/metrics");
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Some(rest) = series.strip_prefix(metric) else {
                continue;
            };
            let this_metric = rest.is_empty() || rest.starts_with('{');
            if this_metric && labels.iter().all(|label| rest.contains(label)) {
                sum += value.parse::<f64>().expect("a number");
            }
        }
    }
    sum
}

#[test]
fn s3_gateway_serves_real_clients_and_survives_two_lost_nodes() {
    let python = python();
    let cluster = TestCluster::up(6);
    pytest(&cluster, &python, &endpoints(&cluster, &[]), "not degraded");
    // What the clients did shows in the nodes' /metrics, by operation and status class.
    let requests = |labels: &[&str]| s3_metric(&cluster, "nabu_s3_requests_total", labels);
    for op in [
        "PutObject",
        "GetObject",
        "HeadObject",
        "ListObjectsV2",
        "UploadPart",
    ] {
        let answered = requests(&[&format!("op=\"{op}\""), "status=\"2xx\""]);
        assert!(answered > 0.0, "no successful {op} in /metrics");
    }
    // The wrong-secret and unknown-key tests were answered 403.
    assert!(requests(&["status=\"4xx\""]) > 0.0, "no 4xx in /metrics");
    let sent = s3_metric(&cluster, "nabu_s3_sent_bytes_total", &["op=\"GetObject\""]);
    let received = s3_metric(
        &cluster,
        "nabu_s3_received_bytes_total",
        &["op=\"UploadPart\""],
    );
    assert!(
        sent >= 1e6 && received >= 256e6,
        "sent {sent}, received {received}"
    );
    cluster.kill(2);
    cluster.kill(5);
    pytest(&cluster, &python, &endpoints(&cluster, &[2, 5]), "degraded");
}
