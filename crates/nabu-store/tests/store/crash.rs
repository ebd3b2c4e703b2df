//! Real crashes: a child process writes and prints each acknowledged key; the parent kills it
//! with SIGKILL at random moments and checks that every acknowledged write survived.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use nabu_store::{RealDisk, Store, StoreConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{length_for, payload_for, read};

/// Set in the child: the store directory it writes to.
const CHILD_DIR_VAR: &str = "NABU_CRASH_CHILD_DIR";
/// Set in the child: the round number, which makes its keys unique.
const CHILD_ROUND_VAR: &str = "NABU_CRASH_CHILD_ROUND";
/// Kill rounds per test run.
const ROUNDS: u64 = 20;
/// The most acknowledgements the parent waits for before a kill.
const ACKS_BEFORE_KILL_MAX: u64 = 150;

fn crash_config(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(vec![dir.to_path_buf()]);
    config.segment_bytes_max = 1 << 20;
    config
}

/// The writer half of `acknowledged_writes_survive_kill_9`: does nothing unless started by it
/// (with `NABU_CRASH_CHILD_DIR` set). Writes until killed, printing `PUT key` after each `put`
/// returns, and `DELETING key` before and `DEL key` after each `delete`.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR_VAR) else {
        return;
    };
    let round: u64 = std::env::var(CHILD_ROUND_VAR)
        .expect("round")
        .parse()
        .expect("number");
    let store =
        Store::open(crash_config(Path::new(&dir)), Arc::new(RealDisk::new())).expect("open");
    let mut out = std::io::stdout().lock();
    for index in 0u64.. {
        let key = format!("r{round}-k{index}");
        store
            .put(key.as_bytes(), &payload_for(&key, length_for(&key, 20_000)))
            .expect("put");
        writeln!(out, "PUT {key}")
            .and_then(|()| out.flush())
            .expect("stdout");
        if index % 5 == 4 {
            let victim = format!("r{round}-k{}", index - 3);
            writeln!(out, "DELETING {victim}")
                .and_then(|()| out.flush())
                .expect("stdout");
            store.delete(victim.as_bytes()).expect("delete");
            writeln!(out, "DEL {victim}")
                .and_then(|()| out.flush())
                .expect("stdout");
        }
    }
}

/// What the parent knows was acknowledged.
#[derive(Default)]
struct Acks {
    puts: BTreeSet<String>,
    deletes: BTreeSet<String>,
    /// Deletes started but maybe not acknowledged: either outcome is allowed.
    deletes_started: BTreeSet<String>,
}

impl Acks {
    /// Records one line of the child's output; returns whether it was an acknowledgement.
    fn record(&mut self, line: &str) -> bool {
        if let Some(key) = line.strip_prefix("PUT ") {
            self.puts.insert(key.to_owned())
        } else if let Some(key) = line.strip_prefix("DEL ") {
            self.deletes.insert(key.to_owned())
        } else if let Some(key) = line.strip_prefix("DELETING ") {
            self.deletes_started.insert(key.to_owned());
            false
        } else {
            false
        }
    }

    fn check(&self, store: &Store) {
        for key in &self.puts {
            let got = read(store, key);
            if self.deletes.contains(key) {
                assert_eq!(got, None, "acknowledged delete of {key} was lost");
            } else {
                let want = payload_for(key, length_for(key, 20_000));
                let unacknowledged_delete = got.is_none() && self.deletes_started.contains(key);
                let intact = got.as_ref() == Some(&want);
                assert!(
                    intact || unacknowledged_delete,
                    "acknowledged put of {key} was lost"
                );
            }
        }
    }
}

fn run_child_round(dir: &Path, round: u64, acks_wanted: u64, acks: &mut Acks) {
    let exe: PathBuf = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash::crash_child_writer",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DIR_VAR, dir)
        .env(CHILD_ROUND_VAR, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = 0;
    while seen < acks_wanted {
        let Some(Ok(line)) = lines.next() else {
            panic!("child of round {round} stopped after {seen} acknowledgements")
        };
        seen += u64::from(acks.record(&line));
    }
    child.kill().expect("SIGKILL child");
    child.wait().expect("reap child");
    // Lines already printed before the kill are acknowledgements too.
    for line in lines.map_while(Result::ok) {
        acks.record(&line);
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let seed: u64 = rand::random();
    println!("crash test seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acks = Acks::default();
    for round in 0..ROUNDS {
        let acks_wanted = rng.random_range(1..=ACKS_BEFORE_KILL_MAX);
        run_child_round(dir.path(), round, acks_wanted, &mut acks);
        let store = Store::open(crash_config(dir.path()), Arc::new(RealDisk::new()))
            .unwrap_or_else(|error| panic!("reopen after round {round} (seed {seed}): {error}"));
        acks.check(&store);
        if round % 4 == 3 {
            store.compact().expect("compact");
            acks.check(&store);
        }
    }
    println!(
        "crash test: {} puts and {} deletes acknowledged",
        acks.puts.len(),
        acks.deletes.len()
    );
}
