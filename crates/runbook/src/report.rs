//! The one report type of `sig-gate drill` and `sig-gate scorecard`: a verdict, the command's
//! own totals, the wall time, why the run stopped early (if it did), and one [`Entry`] per
//! phase or scenario, each a name, a verdict, the command's own details and its [`Check`]s.
//!
//! `--json` prints it as one object whose keys are, in order: `passed`, the totals' fields,
//! `duration_secs`, `error` (only when set) and the entries under the command's own key
//! ([`Totals::ENTRIES`]: `phases` for the drill, `scenarios` for the scorecard); each entry is
//! `name`, `passed`, the details' fields, `checks`. docs/operations.md documents both
//! shapes; tests/runbook.rs checks both.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::Check;

/// The command-specific totals of a [`Report`], flattened into its JSON object.
pub trait Totals: Serialize {
    /// The JSON key the entries are listed under.
    const ENTRIES: &'static str;
}

/// A drill's or a scorecard's verdict: what `--json` prints.
#[derive(Debug)]
pub struct Report<T, D> {
    /// Every entry passed and the command's own conditions held.
    pub passed: bool,
    /// The command's totals.
    pub totals: T,
    /// Wall time, seconds (one decimal).
    pub duration_secs: f64,
    /// Why the run stopped early, if it did.
    pub error: Option<String>,
    /// One entry per phase or scenario, in order.
    pub entries: Vec<Entry<D>>,
}

/// One phase's or scenario's verdict.
#[derive(Debug, Serialize)]
pub struct Entry<D> {
    /// What the phase or scenario is.
    pub name: String,
    /// Its verdict.
    pub passed: bool,
    /// The command's details of it.
    #[serde(flatten)]
    pub detail: D,
    /// Every comparison made, expected against observed.
    pub checks: Vec<Check>,
}

impl<T, D> Report<T, D> {
    /// A report of a run that stopped before any entry was played.
    pub fn aborted(totals: T, why: &str) -> Report<T, D> {
        Report {
            passed: false,
            totals,
            duration_secs: 0.0,
            error: Some(why.to_owned()),
            entries: Vec::new(),
        }
    }

    /// Entries that passed.
    pub fn score(&self) -> usize {
        self.entries.iter().filter(|e| e.passed).count()
    }
}

/// Wall time in seconds, rounded to one decimal for the report.
pub fn tenths(elapsed: std::time::Duration) -> f64 {
    (elapsed.as_secs_f64() * 10.0).round() / 10.0
}

impl<T: Totals, D: Serialize> Serialize for Report<T, D> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// The report's fields in `--json` order, the totals flattened in.
        #[derive(Serialize)]
        struct Wire<'a, T, D: Serialize> {
            passed: bool,
            #[serde(flatten)]
            totals: &'a T,
            duration_secs: f64,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: &'a Option<String>,
            #[serde(flatten)]
            entries: Entries<'a, D>,
        }
        Wire {
            passed: self.passed,
            totals: &self.totals,
            duration_secs: self.duration_secs,
            error: &self.error,
            entries: Entries(T::ENTRIES, &self.entries),
        }
        .serialize(serializer)
    }
}

/// The entries under their command's key, as a one-key map to flatten.
struct Entries<'a, D>(&'static str, &'a [Entry<D>]);

impl<D: Serialize> Serialize for Entries<'_, D> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.0, self.1)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Sums {
        score: usize,
    }

    impl Totals for Sums {
        const ENTRIES: &'static str = "scenarios";
    }

    #[derive(Serialize)]
    struct Note {
        note: &'static str,
    }

    #[test]
    fn json_keys_come_in_the_documented_order() {
        let report = Report {
            passed: false,
            totals: Sums { score: 1 },
            duration_secs: 1.5,
            error: None,
            entries: vec![Entry {
                name: "s".to_owned(),
                passed: true,
                detail: Note { note: "n" },
                checks: vec![Check::equal("c", 1, 1)],
            }],
        };
        assert_eq!(
            serde_json::to_string(&report).expect("serialises"),
            r#"{"passed":false,"score":1,"duration_secs":1.5,"scenarios":[{"name":"s","passed":true,"note":"n","checks":[{"name":"c","expected":"1","observed":"1","passed":true}]}]}"#
        );
        let aborted: Report<Sums, Note> = Report::aborted(Sums { score: 0 }, "stop");
        assert_eq!(
            serde_json::to_string(&aborted).expect("serialises"),
            r#"{"passed":false,"score":0,"duration_secs":0.0,"error":"stop","scenarios":[]}"#
        );
    }
}
