//! The KV cache and its Redis-protocol endpoint, driven by real clients: redis-py (from the
//! test venv that `scripts/test` creates: `.venv/bin/python`, or `$NABU_TEST_PYTHON`),
//! `redis-cli` (Debian's `redis-tools`), raw sockets for byte-exact replies and bad input,
//! and the native Rust client for pins and `prefix_lookup` leases.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nabu_client::{Client, ClientConfig, ClusterMap, KvItem, MemberAddr};
use nabu_proto::ClusterToken;

use crate::support::{TestCluster, http_get, http_ok, test_python};

/// The Python interpreter with redis-py installed.
fn python() -> PathBuf {
    test_python(
        "NABU_TEST_PYTHON",
        ".venv",
        "run scripts/test (it creates the venv with redis-py)",
    )
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kv")
        .join(name)
}

/// Runs a test script and returns its stdout; fails the test with its output otherwise.
fn run_python(name: &str, args: &[&str]) -> String {
    let output = Command::new(python())
        .arg(script(name))
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn split_addr(addr: &str) -> (&str, &str) {
    addr.rsplit_once(':').expect("host:port")
}

/// `redis-cli -h H -p P -a PASSWORD ARGS`: its stdout, trimmed (not a terminal, so replies
/// are printed raw: `OK`, `1`, an empty line for nil, errors as `ERR …`).
fn redis_cli(addr: &str, password: &str, args: &[&str]) -> String {
    let (host, port) = split_addr(addr);
    let output = Command::new("redis-cli")
        .args(["-h", host, "-p", port, "--no-auth-warning", "-a", password])
        .args(args)
        .output()
        .expect("run redis-cli (Debian package redis-tools; scripts/test installs it)");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text.trim_end().to_owned()
}

/// A raw RESP connection for byte-exact checks.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    fn connect(addr: &str) -> Self {
        let stream = TcpStream::connect(addr).expect("connect to the RESP endpoint");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self { stream }
    }

    fn command(args: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend(format!("${}\r\n", arg.len()).into_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends `args` and checks the reply is exactly `expected`.
    fn expect(&mut self, args: &[&[u8]], expected: &[u8]) {
        self.send(&Self::command(args));
        self.expect_bytes(expected);
    }

    fn expect_bytes(&mut self, expected: &[u8]) {
        let mut got = vec![0u8; expected.len()];
        self.stream.read_exact(&mut got).expect("read the reply");
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected),
            "reply bytes differ"
        );
    }

    /// Reads one line (through `\r\n`).
    fn line(&mut self) -> String {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            self.stream.read_exact(&mut byte).expect("read a line");
            line.push(byte[0]);
        }
        String::from_utf8_lossy(&line).into_owned()
    }

    /// Whether the server closed the connection: EOF or a reset, not the read timeout.
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    /// Sends bytes the server may refuse half-way (it closes on bad input).
    fn send_hostile(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }
}

/// A native client of `cluster`, from its `cluster.toml`.
fn native_client(cluster: &TestCluster) -> Client {
    let token = ClusterToken::from_hex(&cluster.cluster_value("cluster_token")).unwrap();
    let members = cluster
        .nodes
        .iter()
        .map(|node| {
            MemberAddr::new(
                node.id,
                "default",
                node.data_addr.parse::<std::net::SocketAddr>().unwrap(),
            )
        })
        .collect();
    Client::new(ClusterMap::new(token, members), ClientConfig::default()).unwrap()
}

/// The sum over nodes of one unlabelled metric.
fn metric_sum(cluster: &TestCluster, name: &str) -> u64 {
    cluster
        .nodes
        .iter()
        .map(|node| {
            let text = http_get(&node.http_addr, "/metrics");
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing from /metrics"))
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

#[test]
fn resp_endpoint_serves_real_clients_byte_exact_and_survives_bad_input() {
    let cluster = TestCluster::up(3);
    let password = cluster.cluster_value("resp_password");
    let (first, second) = (&cluster.nodes[0].resp_addr, &cluster.nodes[1].resp_addr);

    // redis-py, RESP3 (HELLO 3 AUTH) and RESP2: every supported command, pipelining.
    let (host, port) = split_addr(first);
    let out = run_python(
        "redis_py.py",
        &[host, port, &password, split_addr(second).1],
    );
    assert!(out.contains("all checks passed"), "{out}");

    // redis-cli.
    let cli = |args: &[&str]| redis_cli(first, &password, args);
    assert_eq!(cli(&["PING"]), "PONG");
    assert_eq!(cli(&["SET", "cli:k", "hello"]), "OK");
    assert_eq!(redis_cli(second, &password, &["GET", "cli:k"]), "hello");
    assert_eq!(cli(&["GET", "cli:missing"]), "");
    assert_eq!(cli(&["SET", "cli:k", "x", "NX"]), "");
    assert_eq!(cli(&["EXISTS", "cli:k", "cli:missing"]), "1");
    assert_eq!(cli(&["MSET", "cli:a", "1", "cli:b", "2"]), "OK");
    assert_eq!(cli(&["MGET", "cli:a", "cli:missing", "cli:b"]), "1\n\n2");
    assert_eq!(cli(&["SET", "cli:t", "v", "EX", "100"]), "OK");
    assert_eq!(cli(&["TTL", "cli:t"]), "100");
    assert_eq!(cli(&["EXPIRE", "cli:a", "50"]), "1");
    assert_eq!(cli(&["PERSIST", "cli:a"]), "1");
    assert_eq!(cli(&["TTL", "cli:a"]), "-1");
    assert_eq!(cli(&["DEL", "cli:a", "cli:b", "cli:missing"]), "2");
    assert_eq!(cli(&["SELECT", "0"]), "OK");
    assert!(cli(&["DBSIZE"]).parse::<u64>().unwrap() >= 2);
    assert!(cli(&["INFO"]).contains("redis_version:"));
    assert!(
        cli(&["--scan", "--pattern", "cli:*"])
            .lines()
            .any(|key| key == "cli:k")
    );
    assert!(cli(&["NOSUCHCOMMAND", "x"]).starts_with("ERR unknown command 'NOSUCHCOMMAND'"));
    let refused = redis_cli(first, "wrong", &["PING"]);
    assert!(
        refused.contains("WRONGPASS") && refused.contains("NOAUTH"),
        "{refused}"
    );

    // Exact reply bytes (RESP2, then RESP3 on the same connection).
    let mut raw = Raw::connect(first);
    raw.expect(&[b"GET", b"k"], b"-NOAUTH Authentication required.\r\n");
    raw.expect(
        &[b"AUTH", b"wrong"],
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    raw.expect(&[b"AUTH", password.as_bytes()], b"+OK\r\n");
    raw.expect(&[b"SET", b"raw:k", b"hello"], b"+OK\r\n");
    raw.expect(&[b"GET", b"raw:k"], b"$5\r\nhello\r\n");
    raw.expect(&[b"GET", b"raw:missing"], b"$-1\r\n");
    raw.expect(&[b"EXISTS", b"raw:k"], b":1\r\n");
    raw.expect(&[b"EXISTS", b"raw:missing"], b":0\r\n");
    raw.expect(&[b"EXISTS", b"raw:k", b"raw:k", b"raw:missing"], b":2\r\n");
    raw.expect(&[b"DEL", b"raw:k"], b":1\r\n");
    raw.expect(&[b"DEL", b"raw:k"], b":0\r\n");
    raw.expect(
        &[b"FOO", b"bar"],
        b"-ERR unknown command 'FOO', with args beginning with: 'bar' \r\n",
    );
    // Pipelined: three commands in one write, three replies in order.
    let mut pipeline = Raw::command(&[b"SET", b"raw:p", b"1"]);
    pipeline.extend(Raw::command(&[b"GET", b"raw:p"]));
    pipeline.extend(Raw::command(&[b"PING"]));
    raw.send(&pipeline);
    raw.expect_bytes(b"+OK\r\n$1\r\n1\r\n+PONG\r\n");
    raw.send(&Raw::command(&[b"HELLO", b"3"]));
    assert_eq!(raw.line(), "%7\r\n");
    let mut rest = Vec::new();
    // Seven pairs: seven bulk keys (two lines each) and values redis, 7.2.0, :3, :<id>,
    // standalone, master, *0 (two, two, one, one, two, two and one lines).
    for _ in 0..25 {
        rest.push(raw.line());
    }
    assert!(rest.iter().any(|line| line == ":3\r\n"), "{rest:?}");
    raw.expect(&[b"GET", b"raw:missing"], b"_\r\n");
    raw.expect(&[b"GET", b"raw:p"], b"$1\r\n1\r\n");

    // Garbage, truncated and oversized input: the node answers a protocol error and closes
    // that connection only; another client goes on being served.
    let mut bystander = Raw::connect(first);
    bystander.expect(&[b"AUTH", password.as_bytes()], b"+OK\r\n");
    let bad_inputs: [&[u8]; 4] = [
        b"*1\r\n$abc\r\n",
        b"*2\r\n$3\r\nGET\r\n$99999999999\r\n",
        b"*2\r\n$3\r\nGET\r\n:1\r\n",
        &[0xff; 70_000],
    ];
    for bad in bad_inputs {
        let mut attacker = Raw::connect(first);
        attacker.expect(&[b"AUTH", password.as_bytes()], b"+OK\r\n");
        attacker.send_hostile(bad);
        assert!(attacker.line().starts_with("-ERR Protocol error"));
        assert!(attacker.closed());
    }
    let mut unauthenticated = Raw::connect(first);
    unauthenticated.send(b"*2\r\n$3\r\nGET\r\n$100000\r\n");
    assert!(unauthenticated.line().starts_with("-ERR Protocol error"));
    let mut truncated = Raw::connect(first);
    truncated.expect(&[b"AUTH", password.as_bytes()], b"+OK\r\n");
    truncated.send(b"*3\r\n$3\r\nSET\r\n$5\r\nraw:t\r\n$1000000\r\nonly a few bytes");
    drop(truncated);
    bystander.expect(&[b"PING"], b"+PONG\r\n");
    bystander.expect(&[b"GET", b"raw:t"], b"$-1\r\n");
    bystander.expect(&[b"GET", b"raw:p"], b"$1\r\n1\r\n");
    assert!(http_ok(&cluster.nodes[0].http_addr, "/readyz"));
    assert!(metric_sum(&cluster, "nabu_resp_protocol_errors_total") >= 5);
    assert!(metric_sum(&cluster, "nabu_resp_auth_failures_total") >= 2);
}

/// LMCache's layout, 1,000 chunks of 2 MiB (about 2 GiB) into three pools of 64 MiB: no PUT
/// fails, every GET is exact or a miss, metadata never outlives its bytes, pinned keys stay,
/// and a prefix leased by `prefix_lookup` survives the flood.
#[test]
fn lmcache_layout_into_a_smaller_pool_keeps_pins_and_leased_prefixes() {
    const CHUNK_BYTES: usize = 2 << 20;
    let cluster = TestCluster::up_with(3, &["--kv-bytes", "64MiB"]);
    let password = cluster.cluster_value("resp_password");
    let client = native_client(&cluster);
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let pinned: Vec<KvItem> = (0..8u8)
        .map(|n| KvItem {
            pin: true,
            ..KvItem::new(format!("pinned/{n}"), vec![n; 1 << 20])
        })
        .collect();
    let leased_keys: Vec<Vec<u8>> = (0..16)
        .map(|n| format!("leased/{n}kv_bytes").into_bytes())
        .collect();
    let leased: Vec<KvItem> = leased_keys
        .iter()
        .enumerate()
        .map(|(n, key)| KvItem::new(key.clone(), vec![n as u8 + 100; CHUNK_BYTES]))
        .collect();
    runtime.block_on(async {
        client.kv_put("kv", pinned.clone()).await.unwrap();
        client.kv_put("kv", leased.clone()).await.unwrap();
        let mut lookup = leased_keys.clone();
        lookup.push(b"leased/missingkv_bytes".to_vec());
        lookup.push(leased_keys[0].clone());
        let prefix = client
            .kv_prefix_lookup("kv", &lookup, 600_000)
            .await
            .unwrap();
        assert_eq!(prefix, 16, "the prefix ends at the first missing key");
    });

    let (host, port) = split_addr(&cluster.nodes[0].resp_addr);
    let out = run_python(
        "lmcache_layout.py",
        &[host, port, &password, "1000", &CHUNK_BYTES.to_string()],
    );
    let counts: Vec<u64> = out
        .trim()
        .split(' ')
        .map(|field| field.split_once('=').unwrap().1.parse().unwrap())
        .collect();
    let (hits, misses) = (counts[0], counts[1]);
    assert!(hits > 0 && misses > 0, "{out}");
    assert!(
        hits < 96,
        "more chunks than fit in three 64 MiB pools: {out}"
    );

    runtime.block_on(async {
        let keys: Vec<Vec<u8>> = pinned.iter().map(|item| item.key.clone()).collect();
        let values = client.kv_get("kv", &keys).await.unwrap();
        for (item, value) in pinned.iter().zip(values) {
            assert_eq!(
                value.as_ref(),
                Some(&item.value),
                "a pinned key was evicted"
            );
        }
        let values = client.kv_get("kv", &leased_keys).await.unwrap();
        for (item, value) in leased.iter().zip(values) {
            assert_eq!(
                value.as_ref(),
                Some(&item.value),
                "a leased key was evicted"
            );
        }
    });
    assert!(metric_sum(&cluster, "nabu_kv_evictions_total") > 500);
    assert!(
        metric_sum(&cluster, "nabu_kv_used_bytes")
            <= metric_sum(&cluster, "nabu_kv_capacity_bytes")
    );
}
