//! Fixtures for the tests of this crate and of the crates above it: a real etcd server.
//!
//! `EtcdServer` runs the `etcd` binary (`$NABU_ETCD`, else `etcd` on the `PATH`; Debian's
//! `etcd-server`, which `scripts/test` installs) on free loopback ports with its data in a
//! directory the test owns, so a test can kill it and start it again on the same data.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::membership::provider::MemberListProvider;

/// How long etcd may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A real etcd server for a test, killed when dropped.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl EtcdServer {
    /// Starts etcd with its data under `dir` and waits until it answers.
    ///
    /// # Panics
    /// If the binary is missing or etcd does not answer within 30 s: the test cannot run.
    pub async fn start(dir: &Path) -> Self {
        let free_port = || {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            listener.local_addr().expect("local addr").port()
        };
        let mut server = Self {
            child: None,
            dir: dir.join("etcd"),
            client_port: free_port(),
            peer_port: free_port(),
        };
        server.restart().await;
        server
    }

    /// The client URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kills etcd (SIGKILL: an outage, not a shutdown) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data, and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        let binary = std::env::var_os("NABU_ETCD").unwrap_or_else(|| "etcd".into());
        let log = std::fs::File::create(self.dir.with_extension("log")).expect("etcd log file");
        let child = Command::new(&binary)
            .arg("--name")
            .arg("nabu-test")
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--listen-client-urls")
            .arg(self.url())
            .arg("--advertise-client-urls")
            .arg(self.url())
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{}", self.peer_port))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://127.0.0.1:{}", self.peer_port))
            .arg("--initial-cluster")
            .arg(format!("nabu-test=http://127.0.0.1:{}", self.peer_port))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "start {} ({error}): install etcd (Debian etcd-server; scripts/test does) \
                     or set NABU_ETCD",
                    binary.to_string_lossy()
                )
            });
        self.child = Some(child);
        let started = Instant::now();
        loop {
            let answered = match crate::EtcdMembers::connect(&[self.url()], "/nabu/probe").await {
                Ok(members) => members.current().await.is_ok(),
                Err(_) => false,
            };
            if answered {
                return;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "etcd did not answer within {START_TIMEOUT:?} (log: {})",
                self.dir.with_extension("log").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
