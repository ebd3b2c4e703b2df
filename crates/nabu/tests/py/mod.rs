//! The `nabustore` Python package (crates/nabu-py) against a real six-node `nabu up`
//! cluster: its pytest suite (crates/nabu-py/tests) runs from the venv `scripts/test` builds
//! the package into (`target/py-venv`, or `NABU_PY_PYTHON`), then two nodes are killed and
//! the `degraded` tests load what the first phase stored.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{TestCluster, nabu_binary, run_reported, test_python};

/// The Python interpreter with `nabustore` and its test requirements installed.
fn python() -> PathBuf {
    test_python(
        "NABU_PY_PYTHON",
        "target/py-venv",
        "scripts/test creates it (python3 -m venv target/py-venv, pip install -r \
         crates/nabu-py/tests/requirements.txt, then maturin develop -m \
         crates/nabu-py/Cargo.toml in it)",
    )
}

/// Runs the package's pytest suite, only the tests `marker` selects.
fn pytest(cluster: &TestCluster, python: &Path, marker: &str, killed: &str) {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nabu-py/tests");
    let mut pytest = Command::new(python);
    pytest
        .args(["-m", "pytest", "-v", "--durations=8", "-m", marker])
        .arg(&tests)
        .current_dir(&tests)
        .env("NABU_CLUSTER", cluster.cluster_file())
        .env("NABU_BIN", nabu_binary())
        .env("NABU_PY_STATE", cluster.dir.path().join("py-state"))
        .env("NABU_PY_KILLED", killed)
        .env("TMPDIR", cluster.dir.path());
    // " passed": pytest ran a test (a marker that selects none fails the test).
    run_reported(&mut pytest, &format!("pytest -m '{marker}'"), " passed");
}

#[test]
fn python_package_against_a_real_cluster_and_two_lost_nodes() {
    let python = python();
    let cluster = TestCluster::up(6);
    pytest(&cluster, &python, "not degraded", "");
    cluster.kill(2);
    cluster.kill(5);
    pytest(&cluster, &python, "degraded", "2,5");
}
