//! What a directory's ignore rules leave out, as GET_LAST_SEQUENCE reports it on request (and
//! as both status commands print it): what is ignored is never a secret. Counts are by rule;
//! a listing of the paths is bounded ([`MAX_IGNORED_LISTED`]).

use serde::{Deserialize, Serialize};

/// The most ignored paths one GET_LAST_SEQUENCE reply lists per directory; the rest are
/// counted in [`IgnoredReport::more`].
pub const MAX_IGNORED_LISTED: u32 = 1000;

/// The `source` of a rule from the built-in ignore list. The other sources are `--ignore`,
/// `zync` (its own temp files) and a `.zyncignore` file's path below the root.
pub const BUILT_IN: &str = "built-in";

/// What one directory ignores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoredReport {
    /// How many paths are ignored. An ignored directory counts once, whatever it holds.
    pub total: u64,
    /// The count of each rule, most first.
    pub rules: Vec<IgnoredCount>,
    /// The ignored paths by path, when asked for: at most [`MAX_IGNORED_LISTED`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<IgnoredPath>>,
    /// How many ignored paths `paths` leaves out (0 when it lists them all, or was not asked).
    #[serde(default)]
    pub more: u64,
}

/// How many paths one rule ignores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoredCount {
    /// The pattern as written (`build/`, `*.pyc`).
    pub pattern: String,
    /// Where it comes from: [`BUILT_IN`], `--ignore`, `zync`, or a `.zyncignore`'s path.
    pub source: String,
    /// How many paths it ignores.
    pub count: u64,
}

/// One ignored path and its rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoredPath {
    /// The path relative to the directory.
    pub path: String,
    /// Whether it is a directory (ignored with everything in it).
    #[serde(default)]
    pub is_dir: bool,
    /// The rule's pattern.
    pub pattern: String,
    /// The rule's source (see [`IgnoredCount::source`]).
    pub source: String,
}

/// A rule's name in a report: ``rule `build/` `` for a built-in one, ``rule `*.pyc` from
/// proj/.zyncignore`` otherwise. The parts are shown as given: a caller printing to a terminal
/// makes control characters visible.
pub fn rule_label(pattern: &str, source: &str) -> String {
    if source == BUILT_IN {
        format!("rule `{pattern}`")
    } else {
        format!("rule `{pattern}` from {source}")
    }
}

impl IgnoredReport {
    /// The report built from counts by rule, `total` their sum.
    pub fn from_counts(rules: Vec<IgnoredCount>) -> IgnoredReport {
        IgnoredReport {
            total: rules.iter().map(|r| r.count).sum(),
            rules,
            paths: None,
            more: 0,
        }
    }

    /// One line: `nothing`, or ``13 paths (rule `build/`: 3, rule `*.pyc` from
    /// proj/.zyncignore: 10)``.
    pub fn summary(&self) -> String {
        if self.total == 0 {
            return "nothing".to_string();
        }
        let rules: Vec<String> = self
            .rules
            .iter()
            .map(|r| format!("{}: {}", rule_label(&r.pattern, &r.source), r.count))
            .collect();
        let noun = if self.total == 1 { "path" } else { "paths" };
        format!("{} {noun} ({})", self.total, rules.join(", "))
    }
}

impl IgnoredPath {
    /// The path as listed: a directory with a trailing `/`, then its rule.
    pub fn line(&self) -> String {
        let slash = if self.is_dir { "/" } else { "" };
        format!(
            "{}{slash}  ({})",
            self.path,
            rule_label(&self.pattern, &self.source)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(pattern: &str, source: &str, count: u64) -> IgnoredCount {
        IgnoredCount {
            pattern: pattern.into(),
            source: source.into(),
            count,
        }
    }

    #[test]
    fn the_summary_names_each_rule_and_its_source() {
        let report = IgnoredReport::from_counts(vec![
            count("*.pyc", "proj/.zyncignore", 10),
            count("build/", BUILT_IN, 3),
        ]);
        assert_eq!(report.total, 13);
        assert_eq!(
            report.summary(),
            "13 paths (rule `*.pyc` from proj/.zyncignore: 10, rule `build/`: 3)"
        );
        assert_eq!(
            IgnoredReport::from_counts(vec![count("x", "--ignore", 1)]).summary(),
            "1 path (rule `x` from --ignore: 1)"
        );
        assert_eq!(IgnoredReport::default().summary(), "nothing");
        let dir = IgnoredPath {
            path: "web/build".into(),
            is_dir: true,
            pattern: "build/".into(),
            source: BUILT_IN.into(),
        };
        assert_eq!(dir.line(), "web/build/  (rule `build/`)");
    }

    #[test]
    fn a_report_without_a_listing_parses_and_prints_without_one() {
        let report: IgnoredReport =
            serde_json::from_str(r#"{"total":0,"rules":[]}"#).expect("parse");
        assert_eq!(report, IgnoredReport::default());
        let text = serde_json::to_string(&report).expect("json");
        assert!(!text.contains("paths"), "{text}");
    }
}
