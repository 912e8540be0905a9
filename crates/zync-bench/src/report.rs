//! The two tables the benchmark prints, a row per scenario, medians over the runs: times,
//! ratios and bytes on the wire; then CPU time, peak memory and bytes from R to E per process.

use std::time::Duration;

/// One scenario's results, already reduced to medians; `None` prints as "n/a".
#[derive(Debug, Default, Clone)]
pub struct Row {
    pub scenario: String,
    pub zync: Option<Duration>,
    pub rsync: Option<Duration>,
    /// `rsync --fsync`: rsync made as durable as zync (every file flushed before it counts).
    pub rsync_fsync: Option<Duration>,
    /// The fastest run of each: noise on a shared VM only ever adds time, so the best runs
    /// compare the tools where the machine got in neither's way.
    pub best: (Option<Duration>, Option<Duration>),
    /// Free text replacing the zync time (the latency scenario's p50/p95).
    pub zync_note: Option<String>,
    /// Free text replacing the rsync time (why rsync has no number).
    pub rsync_note: Option<String>,
    /// Peak RSS in KiB of the daemon and the client.
    pub zync_rss: (Option<u64>, Option<u64>),
    /// Peak RSS in KiB of the rsync daemon (with its forks) and the rsync client (with its forks).
    pub rsync_rss: (Option<u64>, Option<u64>),
    /// CPU time (user + system) of zync's daemon and client.
    pub zync_cpu: (Option<Duration>, Option<Duration>),
    /// CPU time of rsync's daemon side (the daemon and the sender it forks) and client side
    /// (the generator and the receiver it forks).
    pub rsync_cpu: (Option<Duration>, Option<Duration>),
    /// Bytes through the proxy, both directions: zync, rsync.
    pub wire: (Option<u64>, Option<u64>),
    /// Bytes through the proxy from the client to the server (R to E): zync, rsync. For an
    /// edit, mostly the signature of R's old version.
    pub up: (Option<u64>, Option<u64>),
}

/// The median of `values`, the mean of the middle two for an even count; `None` when empty.
pub fn median<T: Copy + Ord + MeanOf>(values: &[T]) -> Option<T> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort();
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        T::mean_of(v[mid - 1], v[mid])
    })
}

/// The value at percentile `p` (0..=100) by nearest rank; `None` when empty.
pub fn percentile(values: &[Duration], p: u32) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort();
    let rank = (p as usize * v.len()).div_ceil(100).max(1);
    Some(v[rank.min(v.len()) - 1])
}

/// The mean of two values, for the median of an even count.
pub trait MeanOf {
    /// The mean of `a` and `b`.
    fn mean_of(a: Self, b: Self) -> Self;
}
impl MeanOf for Duration {
    fn mean_of(a: Self, b: Self) -> Self {
        (a + b) / 2
    }
}
impl MeanOf for u64 {
    fn mean_of(a: Self, b: Self) -> Self {
        a / 2 + b / 2 + (a % 2 + b % 2) / 2
    }
}

/// A duration for the table: milliseconds below 10 s, seconds above.
pub fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn fmt_kib(k: Option<u64>) -> String {
    match k {
        Some(k) => format!("{:.1}M", k as f64 / 1024.0),
        None => "n/a".into(),
    }
}

fn fmt_bytes(b: Option<u64>) -> String {
    match b {
        Some(b) if b >= 10 << 20 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        Some(b) if b >= 10 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        Some(b) => format!("{b} B"),
        None => "n/a".into(),
    }
}

/// CPU seconds: "0.42 s".
fn fmt_cpu(d: Option<Duration>) -> String {
    d.map_or_else(|| "n/a".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// "daemon + client = total" of one tool's CPU, or the one known part.
fn fmt_cpu_pair(cpu: (Option<Duration>, Option<Duration>)) -> String {
    match cpu {
        (None, None) => "n/a".into(),
        (Some(d), Some(c)) => format!(
            "{} + {} = {}",
            fmt_cpu(Some(d)),
            fmt_cpu(Some(c)),
            fmt_cpu(Some(d + c))
        ),
        (d, c) => format!("{} + {}", fmt_cpu(d), fmt_cpu(c)),
    }
}

/// "x, y" of a pair of byte counts, "n/a" when neither was measured.
fn fmt_bytes_pair(pair: (Option<u64>, Option<u64>)) -> String {
    match pair {
        (None, None) => "n/a".into(),
        (z, s) => format!("{}, {}", fmt_bytes(z), fmt_bytes(s)),
    }
}

const TIMES: [&str; 7] = [
    "scenario",
    "zync median",
    "rsync median",
    "zync/rsync",
    "best (zync, rsync, ratio)",
    "rsync --fsync median (zync/it)",
    "bytes on wire (zync, rsync)",
];

/// The cells of one row of the first table, in `TIMES` order.
fn time_cells(r: &Row) -> Vec<String> {
    let time = |d: Option<Duration>, note: &Option<String>| match (note, d) {
        (Some(n), _) => n.clone(),
        (None, Some(d)) => fmt_duration(d),
        (None, None) => "n/a".into(),
    };
    let ratio = |other: Option<Duration>| match (r.zync, other) {
        (Some(z), Some(s)) if !s.is_zero() && r.zync_note.is_none() => {
            Some(format!("{:.2}", z.as_secs_f64() / s.as_secs_f64()))
        }
        _ => None,
    };
    let fsynced = match (r.rsync_fsync, ratio(r.rsync_fsync)) {
        (Some(d), Some(q)) => format!("{} ({q})", fmt_duration(d)),
        _ => "n/a".into(),
    };
    let best = match r.best {
        (Some(z), Some(s)) if !s.is_zero() => format!(
            "{}, {}, {:.2}",
            fmt_duration(z),
            fmt_duration(s),
            z.as_secs_f64() / s.as_secs_f64()
        ),
        _ => "n/a".into(),
    };
    vec![
        r.scenario.clone(),
        time(r.zync, &r.zync_note),
        time(r.rsync, &r.rsync_note),
        ratio(r.rsync).unwrap_or_else(|| "n/a".into()),
        best,
        fsynced,
        fmt_bytes_pair(r.wire),
    ]
}

const COSTS: [&str; 7] = [
    "scenario",
    "zync CPU (daemon + client)",
    "rsync CPU (daemon + client)",
    "CPU zync/rsync",
    "zync peak RSS (daemon, client)",
    "rsync peak RSS (daemon, client)",
    "bytes R→E (zync, rsync)",
];

/// The cells of one row of the second table, in `COSTS` order.
fn cost_cells(r: &Row) -> Vec<String> {
    let total = |(d, c): (Option<Duration>, Option<Duration>)| Some(d? + c?);
    let ratio = match (total(r.zync_cpu), total(r.rsync_cpu)) {
        (Some(z), Some(s)) if !s.is_zero() => format!("{:.2}", z.as_secs_f64() / s.as_secs_f64()),
        _ => "n/a".into(),
    };
    vec![
        r.scenario.clone(),
        fmt_cpu_pair(r.zync_cpu),
        fmt_cpu_pair(r.rsync_cpu),
        ratio,
        format!("{}, {}", fmt_kib(r.zync_rss.0), fmt_kib(r.zync_rss.1)),
        format!("{}, {}", fmt_kib(r.rsync_rss.0), fmt_kib(r.rsync_rss.1)),
        fmt_bytes_pair(r.up),
    ]
}

/// A Markdown table with padded columns.
fn markdown(header: &[&str], body: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in body {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out += &line(&widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>());
    for row in body {
        out += &line(row);
    }
    out
}

/// The times table as Markdown, ready to paste into docs/BENCHMARK.md.
pub fn format_table(rows: &[Row]) -> String {
    markdown(&TIMES, &rows.iter().map(time_cells).collect::<Vec<_>>())
}

/// The CPU, memory and upstream bytes table as Markdown.
pub fn format_costs(rows: &[Row]) -> String {
    markdown(&COSTS, &rows.iter().map(cost_cells).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts_and_of_nothing() {
        assert_eq!(median(&[5u64, 1, 3]), Some(3));
        assert_eq!(median(&[4u64, 1, 3, 2]), Some(2));
        assert_eq!(median::<u64>(&[]), None);
        let ms = Duration::from_millis;
        assert_eq!(median(&[ms(30), ms(10)]), Some(ms(20)));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 95), Some(Duration::from_millis(95)));
        assert_eq!(percentile(&v[..1], 95), Some(Duration::from_millis(1)));
    }

    #[test]
    fn the_table_has_aligned_columns_a_ratio_and_n_a_where_nothing_was_measured() {
        let rows = [
            Row {
                scenario: "big-file".into(),
                zync: Some(Duration::from_millis(1500)),
                rsync: Some(Duration::from_millis(1000)),
                rsync_fsync: Some(Duration::from_millis(3000)),
                best: (
                    Some(Duration::from_millis(1200)),
                    Some(Duration::from_millis(800)),
                ),
                zync_rss: (Some(2048), Some(1024)),
                rsync_rss: (Some(512), None),
                wire: (Some(3 << 20), Some(100)),
                ..Row::default()
            },
            Row {
                scenario: "restart".into(),
                zync: Some(Duration::from_secs(12)),
                rsync_note: Some("n/a (no daemon scan)".into()),
                ..Row::default()
            },
        ];
        let table = format_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        let width = lines[0].chars().count();
        assert!(
            lines.iter().all(|l| l.chars().count() == width),
            "ragged:\n{table}"
        );
        assert!(
            lines[2].contains("| 1500.0 ms") && lines[2].contains("| 1.50 "),
            "{}",
            lines[2]
        );
        assert!(
            lines[2].contains("| 1200.0 ms, 800.0 ms, 1.50 "),
            "{}",
            lines[2]
        );
        assert!(lines[2].contains("| 3000.0 ms (0.50) "), "{}", lines[2]);
        assert!(
            lines[2].contains("3145728 B") || lines[2].contains("3072.0 KiB"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("12.00 s") && lines[3].contains("n/a (no daemon scan)"),
            "{}",
            lines[3]
        );
        assert!(lines[3].contains("| n/a "), "{}", lines[3]);
    }

    #[test]
    fn the_costs_table_sums_cpu_per_tool_and_shows_memory_and_upstream_bytes() {
        let ms = Duration::from_millis;
        let rows = [
            Row {
                scenario: "edit-in-big".into(),
                zync_cpu: (Some(ms(400)), Some(ms(250))),
                rsync_cpu: (Some(ms(300)), Some(ms(200))),
                zync_rss: (Some(2048), Some(1024)),
                rsync_rss: (Some(512), None),
                up: (Some(48 << 10), Some(900)),
                ..Row::default()
            },
            Row {
                scenario: "restart".into(),
                zync_cpu: (Some(ms(1500)), None),
                ..Row::default()
            },
        ];
        let table = format_costs(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        let width = lines[0].chars().count();
        assert!(
            lines.iter().all(|l| l.chars().count() == width),
            "ragged:\n{table}"
        );
        let edit = lines[2];
        assert!(edit.contains("| 0.40 s + 0.25 s = 0.65 s "), "{edit}");
        assert!(edit.contains("| 0.30 s + 0.20 s = 0.50 s "), "{edit}");
        assert!(edit.contains("| 1.30 "), "{edit}");
        assert!(
            edit.contains("2.0M, 1.0M") && edit.contains("0.5M, n/a"),
            "{edit}"
        );
        assert!(edit.contains("48.0 KiB, 900 B"), "{edit}");
        let restart = lines[3];
        assert!(restart.contains("| 1.50 s + n/a "), "{restart}");
        assert!(restart.contains("| n/a "), "{restart}");
    }
}
