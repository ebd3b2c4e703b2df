//! The text report of `nabu bench`: the limits, one row per pass with its ratios to them, and
//! the figures issue 3 sets targets for.

use std::fmt::Write;

use serde::Serialize;

use super::{Op, PassResult, Report, format_size};

/// One figure judged against a limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// What is divided by what.
    pub what: String,
    /// The quotient.
    pub ratio: f64,
    /// How the quotient is written (`47%` or `3.1×`).
    pub shown: String,
    /// The goal, in words.
    pub goal: &'static str,
}

/// The whole text report.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    header(&mut out, report);
    limits(&mut out, report);
    passes(&mut out, report);
    let _ = writeln!(out, "\njudged against the limits (issue 3 targets)");
    for target in &report.targets {
        let _ = writeln!(
            out,
            "  {:<58} {:>8}   {}",
            target.what, target.shown, target.goal
        );
    }
    out
}

fn header(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "nabu bench: {} nodes, namespace {} ({}, space overhead {:.2}), keys bench/{}/ (deleted)",
        report.nodes, report.namespace, report.policy, report.space_overhead, report.run_id
    );
    let _ = writeln!(
        out,
        "all {} nodes and this benchmark share this machine's {} cores (nproc)",
        report.nodes, report.cores
    );
}

fn limits(out: &mut String, report: &Report) {
    let (loopback, disk) = (&report.loopback, &report.disk);
    let mode = if disk.direct {
        "O_DIRECT".to_owned()
    } else {
        "buffered: the filesystem refused O_DIRECT (tmpfs?), reads come from memory".to_owned()
    };
    let _ = writeln!(out, "\nlimits (measured in this run)");
    let _ = writeln!(
        out,
        "  loopback TCP, one connection, 4 MiB writes  {}",
        mb_per_sec(loopback.bytes_per_sec)
    );
    let _ = writeln!(
        out,
        "  loopback round trip, 64 B ping-pong         p50 {}  p99 {}",
        micros(loopback.round_trip.p50_us),
        micros(loopback.round_trip.p99_us)
    );
    let _ = writeln!(out, "  device of {} ({mode}):", disk.dir.display());
    let _ = writeln!(
        out,
        "    1 MiB reads, queue depth 16               {}",
        mb_per_sec(disk.read_bytes_per_sec)
    );
    let _ = writeln!(
        out,
        "    1 MiB writes + fdatasync, one at a time   {}",
        mb_per_sec(disk.durable_write_bytes_per_sec)
    );
}

fn passes(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "\n{:<4} {:>6} {:>4} {:>7} {:>11} {:>9} {:>9}   vs limits",
        "op", "size", "conc", "ops", "MB/s", "p50", "p99"
    );
    for pass in &report.passes {
        let _ = writeln!(out, "{}   {}", pass_row(pass), versus_limits(report, pass));
    }
    if let Some(paused) = &report.paused {
        for (label, pass) in [("healthy", &paused.healthy), ("paused", &paused.paused)] {
            let _ = writeln!(
                out,
                "{}   1 MiB GETs, n{} {label}",
                pass_row(pass),
                paused.node
            );
        }
    }
}

fn pass_row(pass: &PassResult) -> String {
    format!(
        "{:<4} {:>6} {:>4} {:>7} {:>11.1} {:>9} {:>9}",
        pass.op.name(),
        format_size(pass.object_bytes),
        pass.concurrency,
        pass.ops,
        pass.bytes_per_sec() / 1e6,
        micros(pass.latency.p50_us),
        micros(pass.latency.p99_us)
    )
}

/// The ratios of one pass to the limits that bound it.
fn versus_limits(report: &Report, pass: &PassResult) -> String {
    let rate = pass.bytes_per_sec();
    let rtt = report.loopback.round_trip.p50_us;
    match pass.op {
        Op::Put => format!(
            "×{:.1} = {} of durable write",
            report.space_overhead,
            percent(rate * report.space_overhead / report.disk.durable_write_bytes_per_sec)
        ),
        Op::Get => format!(
            "{} of loopback, {} of device read; p50 {}, p99 {} RTT",
            percent(rate / report.loopback.bytes_per_sec),
            percent(rate / report.disk.read_bytes_per_sec),
            times(pass.latency.p50_us / rtt),
            times(pass.latency.p99_us / rtt)
        ),
    }
}

/// The figures issue 3 judges: the fastest pass of the largest size against the bandwidth
/// limits, the latency of 4 KiB and 1 MiB GETs at the lowest concurrency against the round
/// trip, and the paused-node p99 against the healthy one.
pub fn targets(report: &Report) -> Vec<Target> {
    let mut targets = Vec::new();
    let largest = report.passes.iter().map(|p| p.object_bytes).max();
    let fastest = |op: Op| {
        report
            .passes
            .iter()
            .filter(|p| p.op == op && Some(p.object_bytes) == largest)
            .max_by(|a, b| a.bytes_per_sec().total_cmp(&b.bytes_per_sec()))
    };
    if let Some(get) = fastest(Op::Get) {
        let size = format_size(get.object_bytes);
        let rate = get.bytes_per_sec();
        targets.push(ratio(
            format!(
                "GET {size} x{} ÷ loopback TCP one connection",
                get.concurrency
            ),
            rate / report.loopback.bytes_per_sec,
            "≥ 50% (with --dir on tmpfs)",
        ));
        targets.push(ratio(
            format!("cold GET {size} x{} ÷ device reads QD16", get.concurrency),
            rate / report.disk.read_bytes_per_sec,
            "≥ 70% (with --dir on disk)",
        ));
    }
    if let Some(put) = fastest(Op::Put) {
        targets.push(ratio(
            format!(
                "PUT {} x{} × {:.1} ÷ durable write",
                format_size(put.object_bytes),
                put.concurrency,
                report.space_overhead
            ),
            put.bytes_per_sec() * report.space_overhead / report.disk.durable_write_bytes_per_sec,
            "≥ 60% (with --dir on disk)",
        ));
    }
    latency_targets(report, &mut targets);
    if let Some(paused) = &report.paused {
        targets.push(multiple(
            format!("GET 1MiB p99 with n{} paused ÷ healthy p99", paused.node),
            paused.paused.latency.p99_us / paused.healthy.latency.p99_us,
            "≤ 2× (hedged reads)",
        ));
    }
    targets
}

fn latency_targets(report: &Report, targets: &mut Vec<Target>) {
    let rtt = report.loopback.round_trip.p50_us;
    for size in [4u64 << 10, 1 << 20] {
        let least_concurrent = report
            .passes
            .iter()
            .filter(|p| p.op == Op::Get && p.object_bytes == size)
            .min_by_key(|p| p.concurrency);
        let Some(get) = least_concurrent else {
            continue;
        };
        for (name, value) in [("p50", get.latency.p50_us), ("p99", get.latency.p99_us)] {
            targets.push(multiple(
                format!(
                    "GET {} x{} {name} ÷ loopback RTT p50",
                    format_size(size),
                    get.concurrency
                ),
                value / rtt,
                "(a floor: 1× is one bare round trip)",
            ));
        }
    }
}

fn ratio(what: String, ratio: f64, goal: &'static str) -> Target {
    Target {
        what,
        ratio,
        shown: percent(ratio),
        goal,
    }
}

fn multiple(what: String, ratio: f64, goal: &'static str) -> Target {
    Target {
        what,
        ratio,
        shown: times(ratio),
        goal,
    }
}

fn percent(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{:.0}%", ratio * 100.0)
    } else {
        "-".to_owned()
    }
}

fn times(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{ratio:.1}×")
    } else {
        "-".to_owned()
    }
}

fn mb_per_sec(bytes_per_sec: f64) -> String {
    format!("{:.1} MB/s", bytes_per_sec / 1e6)
}

/// `31 µs` below a millisecond, `1.25 ms` below a second, `2.50 s` above.
fn micros(us: f64) -> String {
    if us < 1e3 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::limits::{DiskLimits, LoopbackLimits};
    use crate::bench::{Latency, PausedResult};

    fn pass(
        op: Op,
        object_bytes: u64,
        concurrency: usize,
        mb_per_sec: f64,
        p50: f64,
    ) -> PassResult {
        PassResult {
            op,
            object_bytes,
            concurrency,
            ops: 10,
            bytes: (mb_per_sec * 1e6) as u64,
            elapsed_sec: 1.0,
            latency: Latency {
                samples: 10,
                p50_us: p50,
                p99_us: p50 * 2.0,
                max_us: p50 * 3.0,
            },
        }
    }

    fn report() -> Report {
        let mut report = Report {
            run_id: "00ff".into(),
            nodes: 6,
            cores: 2,
            namespace: "default".into(),
            policy: "ec:4+2".into(),
            space_overhead: 1.5,
            loopback: LoopbackLimits {
                bytes_per_sec: 2000e6,
                round_trip: Latency {
                    samples: 100,
                    p50_us: 30.0,
                    p99_us: 60.0,
                    max_us: 90.0,
                },
            },
            disk: DiskLimits {
                dir: "/data".into(),
                direct: true,
                read_bytes_per_sec: 1000e6,
                durable_write_bytes_per_sec: 300e6,
                file_bytes: 256 << 20,
            },
            passes: vec![
                pass(Op::Put, 4 << 10, 1, 1.0, 600.0),
                pass(Op::Get, 4 << 10, 1, 2.0, 300.0),
                pass(Op::Get, 4 << 10, 8, 8.0, 900.0),
                pass(Op::Put, 64 << 20, 1, 100.0, 600_000.0),
                pass(Op::Put, 64 << 20, 8, 120.0, 4_000_000.0),
                pass(Op::Get, 64 << 20, 8, 900.0, 500_000.0),
            ],
            paused: Some(PausedResult {
                node: 3,
                healthy: pass(Op::Get, 1 << 20, 1, 100.0, 3000.0),
                paused: pass(Op::Get, 1 << 20, 1, 90.0, 4500.0),
            }),
            targets: Vec::new(),
        };
        report.targets = targets(&report);
        report
    }

    #[test]
    fn targets_divide_by_the_right_limit() {
        let report = report();
        let shown: Vec<(&str, &str)> = report
            .targets
            .iter()
            .map(|t| (t.what.as_str(), t.shown.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("GET 64MiB x8 ÷ loopback TCP one connection", "45%"),
                ("cold GET 64MiB x8 ÷ device reads QD16", "90%"),
                ("PUT 64MiB x8 × 1.5 ÷ durable write", "60%"),
                ("GET 4KiB x1 p50 ÷ loopback RTT p50", "10.0×"),
                ("GET 4KiB x1 p99 ÷ loopback RTT p50", "20.0×"),
                ("GET 1MiB p99 with n3 paused ÷ healthy p99", "1.5×"),
            ]
        );
    }

    #[test]
    fn renders_rows_with_ratios_and_the_shared_cores() {
        let text = render(&report());
        assert!(text.contains("all 6 nodes and this benchmark share this machine's 2 cores"));
        assert!(text.contains("2000.0 MB/s"), "{text}");
        assert!(text.contains("p50 30 µs  p99 60 µs"), "{text}");
        let put_row = text.lines().find(|l| l.starts_with("PUT    4KiB")).unwrap();
        assert!(put_row.contains("×1.5 = 0% of durable write"), "{put_row}");
        let get_row = text.lines().find(|l| l.starts_with("GET   64MiB")).unwrap();
        assert!(get_row.contains("900.0"), "{get_row}");
        assert!(
            get_row.contains("45% of loopback, 90% of device read"),
            "{get_row}"
        );
        assert!(get_row.contains("500.00 ms"), "{get_row}");
        assert!(text.contains("n3 paused"), "{text}");
        assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    }

    #[test]
    fn units_switch_at_the_right_places() {
        assert_eq!(micros(31.4), "31 µs");
        assert_eq!(micros(1250.0), "1.25 ms");
        assert_eq!(micros(2.5e6), "2.50 s");
        assert_eq!(percent(0.456), "46%");
        assert_eq!(percent(f64::NAN), "-");
        assert_eq!(times(3.04), "3.0×");
    }
}
