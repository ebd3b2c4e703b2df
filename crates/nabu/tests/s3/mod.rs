//! The S3 gateway against real clients: boto3, the AWS CLI and s3fs (and, in the heavy
//! suite, vLLM's Run:ai model streamer), run as the pytest suite in `tests/python` against a
//! real six-node cluster. `scripts/test` installs the clients into `target/s3-venv`
//! (`NABU_S3_PYTHON` names another interpreter).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{TestCluster, nabu_binary};

/// The Python interpreter with the S3 clients installed.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("NABU_S3_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/s3-venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: scripts/test creates it (python3 -m venv target/s3-venv && \
         target/s3-venv/bin/pip install -r crates/nabu/tests/python/requirements.txt), or set \
         NABU_S3_PYTHON",
        venv.display()
    );
    venv
}

/// Runs the pytest suite on `endpoints`, only the tests `marker` selects.
fn pytest(cluster: &TestCluster, python: &Path, endpoints: &[String], marker: &str) {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    let output = Command::new(python)
        .args(["-m", "pytest", "-v", "--durations=8", "-m", marker])
        .arg(&tests)
        .current_dir(&tests)
        .env("NABU_S3_ENDPOINTS", endpoints.join(","))
        .env("NABU_CLUSTER", cluster.cluster_file())
        .env("NABU_BIN", nabu_binary())
        .env("NABU_S3_PYTHON", python)
        .env("NABU_S3_STATE", cluster.dir.path().join("s3-state"))
        .env("TMPDIR", cluster.dir.path())
        .output()
        .expect("run pytest");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("pytest -m '{marker}':\n{report}");
    assert!(
        output.status.success(),
        "pytest -m '{marker}' failed:\n{report}"
    );
    assert!(
        report.contains(" passed"),
        "pytest -m '{marker}' ran no test:\n{report}"
    );
}

fn endpoints(cluster: &TestCluster, skip: &[u32]) -> Vec<String> {
    cluster
        .nodes
        .iter()
        .filter(|node| !skip.contains(&node.id))
        .map(|node| format!("http://{}", node.s3_addr.as_deref().expect("s3_addr")))
        .collect()
}

#[test]
fn s3_gateway_serves_real_clients_and_survives_two_lost_nodes() {
    let python = python();
    let cluster = TestCluster::up(6);
    pytest(&cluster, &python, &endpoints(&cluster, &[]), "not degraded");
    cluster.kill(2);
    cluster.kill(5);
    pytest(&cluster, &python, &endpoints(&cluster, &[2, 5]), "degraded");
}
