//! How numbers and times are stored: sizes and inodes bit for bit in SQLite's signed 64-bit
//! integers, sequence numbers saturating so that they compare right in SQL, and the path range
//! that selects a subtree without `LIKE`.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// The exclusive bounds between which every path strictly below `path` sorts.
pub(crate) fn subtree_bounds(path: &str) -> (String, String) {
    (format!("{path}/"), format!("{path}0"))
}

/// Now, in seconds since the Unix epoch (0 for a clock before it).
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| saturating_i64(d.as_secs()))
}

/// Sizes and inodes are stored bit for bit: a value above `i64::MAX` comes back unchanged.
pub(crate) fn u64_to_sql(value: u64) -> i64 {
    value as i64
}

/// The inverse of [`u64_to_sql`].
pub(crate) fn u64_from_sql(value: i64) -> u64 {
    value as u64
}

/// Sequence numbers are compared in SQL, so they saturate rather than wrap: a `since` beyond
/// `i64::MAX` means "after everything", not "after -1".
pub(crate) fn seq_to_sql(seq: u64) -> i64 {
    saturating_i64(seq)
}

/// Sequence numbers and counts read back; the schema keeps them non-negative.
pub(crate) fn seq_from_sql(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}

pub(crate) fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// How many `/` a path has: how deep below its root it is.
pub(crate) fn depth(path: &str) -> usize {
    path.bytes().filter(|&b| b == b'/').count()
}

/// `rows` rows of `per_row` placeholders each for a multi-row `VALUES` list, each row led by
/// the shared `?1`: `(?1, ?2, ?3), (?1, ?4, ?5)` for 2 rows of 2. One statement for a batch
/// of rows costs one step instead of one per row.
pub(crate) fn values_rows(rows: usize, per_row: usize) -> String {
    let mut sql = String::new();
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?1");
        for col in 0..per_row {
            let n = 2 + row * per_row + col;
            // Writing to a String cannot fail.
            let _ = write!(sql, ", ?{n}");
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_rows_number_every_placeholder_once_after_the_shared_first() {
        assert_eq!(values_rows(1, 1), "(?1, ?2)");
        assert_eq!(values_rows(2, 2), "(?1, ?2, ?3), (?1, ?4, ?5)");
        assert_eq!(values_rows(3, 0), "(?1), (?1), (?1)");
    }
}
