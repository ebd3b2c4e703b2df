//! `TestCluster`: the real `nabu` binary, N node processes in a temp dir on free ports, for
//! kill -9, restart and node-loss tests. It fails the test if a node logged an unexpected
//! ERROR line.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long `nabu up` may take to print `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How many times a cluster start is tried (see [`TestCluster::up`]).
const START_ATTEMPTS: usize = 3;

/// The `nabu` binary under test.
pub fn nabu_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nabu"))
}

/// One node as `cluster.toml` lists it.
#[derive(Debug, Clone)]
pub struct TestNode {
    pub id: u32,
    pub pid: u32,
    pub http_addr: String,
    /// The S3 listener (`host:port`).
    pub s3_addr: Option<String>,
    pub data_addr: String,
    /// The Redis-protocol endpoint.
    pub resp_addr: String,
    pub config: PathBuf,
}

/// A local cluster started with `nabu up --base-port 0` in a temp dir.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    up: Child,
    pub nodes: Vec<TestNode>,
    /// Nodes restarted by the test with `nabu serve` (stopped on drop).
    restarted: Vec<Child>,
    /// ERROR lines a test expects (e.g. from a node it corrupted), ignored by the log check.
    pub expected_errors: Vec<String>,
}

impl TestCluster {
    /// Starts `nodes` nodes and waits for `ready`.
    ///
    /// `--base-port 0` finds free ports by binding and releasing them, so another test may
    /// take one before the node binds it; a start that fails that way is retried with fresh
    /// ports (at most `START_ATTEMPTS` times).
    pub fn up(nodes: usize) -> Self {
        Self::up_with(nodes, &[])
    }

    /// Like [`TestCluster::up`], with more `nabu up` arguments (`--kv-bytes 64MiB`).
    pub fn up_with(nodes: usize, extra_args: &[&str]) -> Self {
        for attempt in 1..=START_ATTEMPTS {
            match Self::try_up(nodes, extra_args) {
                Ok(cluster) => return cluster,
                Err(why) if attempt < START_ATTEMPTS => {
                    eprintln!("nabu up attempt {attempt} failed ({why}); retrying on new ports")
                }
                Err(why) => panic!("nabu up did not print ready: {why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn try_up(nodes: usize, extra_args: &[&str]) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("nabu-test-")
            .tempdir()
            .expect("temp dir");
        let mut up = Command::new(nabu_binary())
            .args([
                "up",
                "--nodes",
                &nodes.to_string(),
                "--base-port",
                "0",
                "--dir",
            ])
            .arg(dir.path())
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nabu up");
        let stdout = up.stdout.take().expect("stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) if line.contains("ready") => break,
                Ok(_) => continue,
                Err(error) => {
                    // SAFETY: kill(2) on the process this function started.
                    unsafe { libc::kill(up.id() as libc::pid_t, libc::SIGTERM) };
                    let status = up.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!("{error}; nabu up {status}"));
                }
            }
        }
        let nodes = read_nodes(&dir.path().join("cluster.toml"));
        Ok(Self {
            dir,
            up,
            nodes,
            restarted: Vec::new(),
            expected_errors: Vec::new(),
        })
    }

    /// The cluster file.
    pub fn cluster_file(&self) -> PathBuf {
        self.dir.path().join("cluster.toml")
    }

    /// A top-level string of `cluster.toml` (`cluster_token`, `resp_password`).
    pub fn cluster_value(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.cluster_file()).expect("cluster.toml");
        let value: toml::Table = text.parse().expect("cluster.toml parses");
        value[name].as_str().expect("a string").to_owned()
    }

    /// Runs `nabu ARGS --cluster <this cluster>`.
    pub fn nabu(&self, args: &[&str]) -> Output {
        Command::new(nabu_binary())
            .args(args)
            .arg("--cluster")
            .arg(self.cluster_file())
            .stdin(Stdio::null())
            .output()
            .expect("run nabu")
    }

    /// SIGKILLs node `id`.
    pub fn kill(&self, id: u32) {
        let node = self.node(id);
        // SAFETY: kill(2) on a pid this cluster started.
        let result = unsafe { libc::kill(node.pid as libc::pid_t, libc::SIGKILL) };
        assert_eq!(result, 0, "kill node n{id}");
        wait_until(Duration::from_secs(10), || !alive(node.pid), "node to die");
    }

    /// Restarts node `id` with `nabu serve --config` and waits until it is ready.
    pub fn restart(&mut self, id: u32) {
        let node = self.node(id).clone();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(node.config.with_file_name("node.log"))
            .expect("node log");
        let child = Command::new(nabu_binary())
            .args(["serve", "--config"])
            .arg(&node.config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start nabu serve");
        let pid = child.id();
        self.restarted.push(child);
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("node")
            .pid = pid;
        wait_until(
            Duration::from_secs(30),
            || http_ok(&node.http_addr, "/readyz"),
            "restarted node ready",
        );
    }

    /// Starts a new node `id` with `nabu serve`, configured like node 1 but with its own
    /// id, free ports and data dir, and alone on its member list (as a new machine would
    /// be); waits until it is ready. Returns its HTTP address.
    pub fn serve_new_node(&mut self, id: u32) -> String {
        let text = std::fs::read_to_string(&self.node(1).config).expect("node 1 config");
        let mut config: toml::Table = text.parse().expect("node.toml parses");
        let dir = self.dir.path().join(format!("n{id}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        config.insert("id".into(), i64::from(id).into());
        let data_dir = dir.join("data").to_string_lossy().into_owned();
        config.insert("data_dirs".into(), vec![toml::Value::from(data_dir)].into());
        for key in [
            "members",
            "data_socket",
            "s3_addr",
            "resp_addr",
            "resp_password",
        ] {
            config.remove(key);
        }
        for key in ["data_addr", "peer_addr", "http_addr"] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            let addr = listener.local_addr().expect("addr").to_string();
            config.insert(key.into(), addr.into());
        }
        let http_addr = config["http_addr"].as_str().expect("http_addr").to_owned();
        let path = dir.join("node.toml");
        std::fs::write(&path, toml::to_string(&config).expect("toml")).expect("write node.toml");
        std::fs::File::create(dir.join("node.log")).expect("node log");
        self.nodes.push(TestNode {
            id,
            pid: 0,
            http_addr: http_addr.clone(),
            s3_addr: None,
            data_addr: config["data_addr"].as_str().expect("data_addr").to_owned(),
            resp_addr: String::new(),
            config: path,
        });
        self.restart(id);
        http_addr
    }

    fn node(&self, id: u32) -> &TestNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("no such node")
    }

    /// ERROR lines in the node logs that no test expected.
    fn unexpected_errors(&self) -> Vec<String> {
        let mut found = Vec::new();
        for node in &self.nodes {
            let log =
                std::fs::read_to_string(node.config.with_file_name("node.log")).unwrap_or_default();
            for line in log.lines().filter(|l| l.contains(" ERROR ")) {
                if !self
                    .expected_errors
                    .iter()
                    .any(|e| line.contains(e.as_str()))
                {
                    found.push(format!("n{}: {line}", node.id));
                }
            }
        }
        found
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // SAFETY: kill(2) on processes this cluster started.
        unsafe { libc::kill(self.up.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.up.wait();
        for child in &mut self.restarted {
            // SAFETY: as above.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = child.wait();
        }
        let errors = self.unexpected_errors();
        if !errors.is_empty() && !std::thread::panicking() {
            panic!(
                "unexpected ERROR lines in node logs:\n{}",
                errors.join("\n")
            );
        }
    }
}

fn read_nodes(path: &Path) -> Vec<TestNode> {
    let text = std::fs::read_to_string(path).expect("cluster.toml");
    let value: toml::Table = text.parse().expect("cluster.toml parses");
    let nodes = value["node"].as_array().expect("[[node]]");
    nodes
        .iter()
        .map(|node| TestNode {
            id: node["id"].as_integer().expect("id") as u32,
            pid: node["pid"].as_integer().expect("pid") as u32,
            http_addr: node["http_addr"].as_str().expect("http_addr").to_owned(),
            s3_addr: node
                .get("s3_addr")
                .and_then(|addr| addr.as_str())
                .map(str::to_owned),
            data_addr: node["data_addr"].as_str().expect("data_addr").to_owned(),
            resp_addr: node["resp_addr"].as_str().expect("resp_addr").to_owned(),
            config: PathBuf::from(node["config"].as_str().expect("config")),
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie still answers kill(0); /proc tells them apart.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

/// The Python interpreter a test drives real clients with: `$env_var` when set, else the venv
/// `venv` (relative to the repository root), which must exist; `setup` says how to make it.
pub fn test_python(env_var: &str, venv: &str, setup: &str) -> PathBuf {
    if let Some(python) = std::env::var_os(env_var) {
        return PathBuf::from(python);
    }
    let python = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(venv)
        .join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: {setup}, or set {env_var}",
        python.display()
    );
    python
}

/// Runs `command` (a test program), prints what it wrote, and fails the test with that
/// unless it succeeded and wrote `expected`. Returns what it wrote.
pub fn run_reported(command: &mut Command, what: &str, expected: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("run {what}: {error}"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{what}:\n{report}");
    assert!(output.status.success(), "{what} failed:\n{report}");
    assert!(
        report.contains(expected),
        "{what} did not report {expected:?}:\n{report}"
    );
    report
}

/// Polls `condition` until it holds, failing the test after `limit`.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + limit;
    let mut delay = Duration::from_millis(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// The whole HTTP/1.1 response (head and body) to `GET path` on `addr`.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect http");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    response
}

/// Whether `GET path` on `addr` answers 200.
pub fn http_ok(addr: &str, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}
