//! Real-process cluster tests: the `nabu` binary, `nabu up`, SIGKILL and `nabu serve`.
//! They run one at a time (nextest group `serial-cluster`).

mod dashboard;
mod kv;
mod py;
mod s3;
mod support;

use std::path::Path;

use rand::{RngCore, SeedableRng};
use support::TestCluster;

fn random_file(path: &Path, bytes: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; bytes];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    std::fs::write(path, &data).expect("write input file");
    data
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn cluster_survives_two_lost_nodes_and_reports_a_third_clearly() {
    let mut cluster = TestCluster::up(6);
    let input = cluster.dir.path().join("input.bin");
    let data = random_file(&input, 256 << 20, 1);
    let put = cluster.nabu(&["put", "big", input.to_str().unwrap()]);
    assert!(put.status.success(), "put failed: {}", stderr(&put));
    let blob_id = String::from_utf8_lossy(&put.stdout).trim().to_owned();
    assert_eq!(blob_id, nabu_core::id::BlobId::of(&data).to_string());

    let output = cluster.dir.path().join("output.bin");
    let get = |cluster: &TestCluster| cluster.nabu(&["get", "big", "-o", output.to_str().unwrap()]);

    cluster.kill(2);
    cluster.kill(5);
    let read = get(&cluster);
    assert!(
        read.status.success(),
        "get with two nodes down failed: {}",
        stderr(&read)
    );
    assert!(
        std::fs::read(&output).unwrap() == data,
        "bytes differ with two nodes down"
    );
    std::fs::remove_file(&output).unwrap();

    cluster.kill(3);
    let read = get(&cluster);
    assert!(
        !read.status.success(),
        "get with three nodes down succeeded"
    );
    let message = stderr(&read);
    assert!(
        message.contains("stripe"),
        "error does not name the stripes: {message}"
    );
    assert_eq!(
        message.trim().lines().count(),
        1,
        "not one clear line: {message}"
    );
    assert!(!output.exists(), "a failed get left a partial file");

    for id in [2, 3, 5] {
        cluster.restart(id);
    }
    let read = get(&cluster);
    assert!(
        read.status.success(),
        "get after restarts failed: {}",
        stderr(&read)
    );
    assert!(
        std::fs::read(&output).unwrap() == data,
        "bytes differ after restarts"
    );
}

#[test]
fn cli_round_trip_list_stat_and_delete() {
    let cluster = TestCluster::up(6);
    let dir = cluster.dir.path();
    let small = random_file(&dir.join("small"), 10_000, 2);
    let medium = random_file(&dir.join("medium"), 9 << 20, 3);
    for (key, file) in [
        ("models/a/small", "small"),
        ("models/a/medium", "medium"),
        ("other", "small"),
    ] {
        let put = cluster.nabu(&["put", key, dir.join(file).to_str().unwrap()]);
        assert!(put.status.success(), "put {key}: {}", stderr(&put));
    }
    let ls = cluster.nabu(&["ls", "models/"]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    assert_eq!(
        String::from_utf8_lossy(&ls.stdout),
        "models/a/medium\nmodels/a/small\n"
    );

    let stat = cluster.nabu(&["stat", "models/a/medium"]);
    let stat_text = String::from_utf8_lossy(&stat.stdout);
    assert!(
        stat_text.contains(&format!("{} bytes", medium.len())),
        "{stat_text}"
    );

    let get = cluster.nabu(&["get", "models/a/small"]);
    assert!(get.stdout == small, "get to stdout differs");

    // Two keys with identical contents: deleting one leaves the other intact.
    let rm = cluster.nabu(&["rm", "other"]);
    assert!(rm.status.success(), "{}", stderr(&rm));
    let gone = cluster.nabu(&["get", "other"]);
    assert!(!gone.status.success());
    assert!(
        stderr(&gone).to_lowercase().contains("not found"),
        "{}",
        stderr(&gone)
    );
    let still = cluster.nabu(&["get", "models/a/small"]);
    assert!(
        still.stdout == small,
        "deleting a twin removed shared bytes"
    );

    // Clients on this host use the nodes' Unix sockets; `--tcp` takes the network path.
    let cluster_toml = std::fs::read_to_string(dir.join("cluster.toml")).expect("cluster.toml");
    assert!(cluster_toml.contains("data_socket"), "{cluster_toml}");
    let tcp = cluster.nabu(&["get", "--tcp", "models/a/small"]);
    assert!(
        tcp.stdout == small,
        "get over TCP differs: {}",
        stderr(&tcp)
    );

    // Space comes back: the medium file's shards are condemned by one collection and
    // deleted by the next, a grace period later; the small file (still named) stays.
    let rm = cluster.nabu(&["rm", "models/a/medium"]);
    assert!(rm.status.success(), "{}", stderr(&rm));
    let gc = ["gc", "--grace", "2s", "--put-deadline", "1s"];
    // Grace periods are about elapsed time: the nodes keep what they wrote (and everything,
    // while younger than the grace period) for 2 s.
    let grace = std::time::Duration::from_millis(2_100);
    std::thread::sleep(grace);
    let first = cluster.nabu(&gc);
    let first_text = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(first_text.contains("deleted: 0 shards"), "{first_text}");
    assert!(
        first_text.contains("condemned: 21"),
        "18 shards, 3 manifests: {first_text}"
    );
    std::thread::sleep(grace);
    let second = cluster.nabu(&gc);
    let second_text = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        second_text.contains("deleted: 18 shards"),
        "3 stripes × 6 shards: {second_text}"
    );
    let still = cluster.nabu(&["get", "models/a/small"]);
    assert!(still.stdout == small, "gc removed live bytes");

    let status = cluster.nabu(&["status"]);
    let table = String::from_utf8_lossy(&status.stdout);
    assert_eq!(
        table.lines().filter(|l| l.contains(" up ")).count(),
        6,
        "{table}"
    );

    // `nabu scrub` checks every stripe's redundancy: all full, then degraded with a node down.
    let scrub = cluster.nabu(&["scrub"]);
    let scrub_text = String::from_utf8_lossy(&scrub.stdout);
    assert!(scrub.status.success(), "{}", stderr(&scrub));
    assert!(
        scrub_text.contains(": 1 stripes, 1 full, 0 degraded, 0 lost"),
        "the small file's whole copies are all there: {scrub_text}"
    );
    cluster.kill(6);
    let degraded = cluster.nabu(&["scrub"]);
    assert!(
        !degraded.status.success(),
        "a degraded cluster scrubbed clean"
    );
    assert!(
        stderr(&degraded).contains("degraded (run with --repair)"),
        "{}",
        stderr(&degraded)
    );
}

#[test]
fn bad_cluster_file_and_missing_key_fail_with_one_clear_line() {
    let cluster = TestCluster::up(3);
    let missing = cluster.nabu(&["get", "no-such-key"]);
    assert!(!missing.status.success());
    assert_eq!(
        stderr(&missing).trim().lines().count(),
        1,
        "{}",
        stderr(&missing)
    );
    let output = std::process::Command::new(support::nabu_binary())
        .args(["ls", "--cluster", "/nonexistent/cluster.toml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("/nonexistent/cluster.toml"),
        "{}",
        stderr(&output)
    );
}

/// `nabu status`'s table, and its row of node `id` (empty if none).
fn status_row(cluster: &TestCluster, id: u32) -> (String, String) {
    let status = cluster.nabu(&["status"]);
    let table = String::from_utf8_lossy(&status.stdout).into_owned();
    let prefix = format!("n{id} ");
    let row = table
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_default()
        .to_owned();
    (table, row)
}

/// Waits until `nabu status` says `membership` (e.g. ", 7 members (etcd membership)") and
/// shows node `id` holding shards.
fn wait_for_member_with_shards(cluster: &TestCluster, id: u32, membership: &str) {
    support::wait_until(
        std::time::Duration::from_secs(60),
        || {
            let (table, row) = status_row(cluster, id);
            table.contains(membership) && !row.is_empty() && !row.trim_end().ends_with(" 0")
        },
        &format!("node {id} to become a member and hold shards"),
    );
}

/// `nabu get KEY` succeeds with exactly `data`.
fn assert_reads_back(cluster: &TestCluster, key: &str, data: &[u8], when: &str) {
    let get = cluster.nabu(&["get", key]);
    assert!(get.status.success(), "{}", stderr(&get));
    assert!(get.stdout == data, "bytes of {key} differ {when}");
}

#[test]
fn nabu_node_add_brings_a_new_node_in_under_static_membership() {
    let mut cluster = TestCluster::up(6);
    let dir = cluster.dir.path().to_owned();
    let data = random_file(&dir.join("model"), 9 << 20, 90);
    let put = cluster.nabu(&["put", "model", dir.join("model").to_str().unwrap()]);
    assert!(put.status.success(), "{}", stderr(&put));
    // A node started on its own (its member list names only itself) is not a member until
    // an operator adds it.
    cluster.serve_new_node(7);
    let data_addr = cluster
        .nodes
        .iter()
        .find(|node| node.id == 7)
        .map(|node| node.data_addr.clone())
        .expect("node 7");
    let (table, row) = status_row(&cluster, 7);
    assert!(row.is_empty(), "node 7 is no member yet:\n{table}");
    let add = cluster.nabu(&["node", "add", "7", "--addr", &data_addr]);
    assert!(add.status.success(), "{}", stderr(&add));
    wait_for_member_with_shards(&cluster, 7, "ring epoch 2, 7 members (static membership)");
    assert_reads_back(&cluster, "model", &data, "after the join");
    let again = cluster.nabu(&["node", "add", "7", "--addr", &data_addr]);
    assert!(!again.status.success(), "added a member twice");
}

#[test]
fn a_node_is_drained_then_removed_and_the_data_stays_whole() {
    let cluster = TestCluster::up(7);
    let dir = cluster.dir.path();
    let data = random_file(&dir.join("model"), 9 << 20, 70);
    let put = cluster.nabu(&["put", "model", dir.join("model").to_str().unwrap()]);
    assert!(put.status.success(), "{}", stderr(&put));

    let (table, row) = status_row(&cluster, 7);
    assert!(
        !row.trim_end().ends_with(" 0"),
        "node 7 holds shards first:\n{table}"
    );
    let early = cluster.nabu(&["node", "remove", "7"]);
    assert!(
        !early.status.success(),
        "removed a node that was not drained"
    );
    assert!(
        stderr(&early).contains("nabu node drain 7"),
        "{}",
        stderr(&early)
    );
    let drain = cluster.nabu(&["node", "drain", "7"]);
    assert!(drain.status.success(), "{}", stderr(&drain));
    assert!(
        String::from_utf8_lossy(&drain.stdout).contains("ring epoch 2: node 7 draining"),
        "{}",
        String::from_utf8_lossy(&drain.stdout)
    );
    // The coordinator moves everything off node 7 (polled: how long it takes is the point of
    // the figure, not of this test).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (table, row) = status_row(&cluster, 7);
        if row.contains("drain") && row.trim_end().ends_with(" 0") {
            assert!(table.contains("ring epoch 2, 7 members"), "{table}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node 7 still holds shards:\n{table}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let remove = cluster.nabu(&["node", "remove", "7"]);
    assert!(remove.status.success(), "{}", stderr(&remove));
    let status = cluster.nabu(&["status"]);
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(table.contains("ring epoch 3, 6 members"), "{table}");
    assert!(!table.contains("\nn7 "), "{table}");
    assert_reads_back(&cluster, "model", &data, "after the drain");
    let scrub = cluster.nabu(&["scrub"]);
    assert!(scrub.status.success(), "{}", stderr(&scrub));
}

#[test]
fn nabu_up_runs_through_etcd_and_a_new_node_joins_by_itself() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let etcd_dir = tempfile::tempdir().expect("temp dir");
    let etcd = runtime.block_on(nabu_node::testing::EtcdServer::start(etcd_dir.path()));
    let mut cluster = TestCluster::up_with(6, &["--membership", "etcd", "--etcd", &etcd.url()]);
    let dir = cluster.dir.path().to_owned();
    let data = random_file(&dir.join("model"), 9 << 20, 80);
    let put = cluster.nabu(&["put", "model", dir.join("model").to_str().unwrap()]);
    assert!(put.status.success(), "{}", stderr(&put));
    let status = cluster.nabu(&["status"]);
    let table = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(table.contains(", 6 members (etcd membership)"), "{table}");
    assert!(!table.contains("not connected to etcd"), "{table}");

    cluster.serve_new_node(7);
    // Node 7 registers and adds itself; the cluster moves its share to it.
    wait_for_member_with_shards(&cluster, 7, ", 7 members (etcd membership)");
    assert_reads_back(&cluster, "model", &data, "after the join");
}
