//! The one table the benchmark prints: a row per scenario, medians, ratio, memory and bytes.

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
    /// Bytes through the proxy, both directions: zync, rsync.
    pub wire: (Option<u64>, Option<u64>),
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

const HEADER: [&str; 9] = [
    "scenario",
    "zync median",
    "rsync median",
    "zync/rsync",
    "best (zync, rsync, ratio)",
    "rsync --fsync median (zync/it)",
    "zync peak RSS (daemon, client)",
    "rsync peak RSS (daemon, client)",
    "bytes on wire (zync, rsync)",
];

/// The cells of one row, in `HEADER` order.
fn cells(r: &Row) -> [String; 9] {
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
    let wire = match r.wire {
        (None, None) => "n/a".into(),
        (z, s) => format!("{}, {}", fmt_bytes(z), fmt_bytes(s)),
    };
    [
        r.scenario.clone(),
        time(r.zync, &r.zync_note),
        time(r.rsync, &r.rsync_note),
        ratio(r.rsync).unwrap_or_else(|| "n/a".into()),
        best,
        fsynced,
        format!("{}, {}", fmt_kib(r.zync_rss.0), fmt_kib(r.zync_rss.1)),
        format!("{}, {}", fmt_kib(r.rsync_rss.0), fmt_kib(r.rsync_rss.1)),
        wire,
    ]
}

/// The table as Markdown with padded columns, ready to paste into README.
pub fn format_table(rows: &[Row]) -> String {
    let body: Vec<[String; 9]> = rows.iter().map(cells).collect();
    let mut widths = HEADER.map(str::len);
    for row in &body {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&HEADER.map(String::from));
    out += &line(&widths.map(|w| "-".repeat(w)));
    for row in &body {
        out += &line(row);
    }
    out
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
            lines[2].contains("2.0M, 1.0M") && lines[2].contains("0.5M, n/a"),
            "{}",
            lines[2]
        );
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
}
