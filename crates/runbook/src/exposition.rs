//! The gate's `/metrics` as the runbook tools read it: the Prometheus text format parsed into
//! samples, looked up by name and labels, and diffed between two scrapes (a counter's delta over
//! a window is what a phase or scenario is judged on, since a gate generation counts from zero
//! at start-up and may have served other traffic before the window opened).

use std::collections::BTreeMap;
use std::time::Instant;

/// One sample line: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, including a `_bucket`/`_sum`/`_count` suffix for histograms.
    pub name: String,
    /// Label pairs, sorted by name.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The series in exposition syntax, `name{a="b",c="d"}` (labels sorted by name, values
    /// escaped as the text format escapes them), or the bare name when it has no labels: a key
    /// that names one series whatever order the exporter wrote its labels in.
    pub fn series(&self) -> String {
        if self.labels.is_empty() {
            return self.name.clone();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(key, value)| {
                let escaped = value
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                format!("{key}=\"{escaped}\"")
            })
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }
}

/// One scrape of `/metrics`, with the moment it was taken.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// When the answer arrived.
    pub at: Instant,
    /// Every sample, in the order the gate wrote them.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parse the text exposition format; comment and blank lines are skipped. `None` when a
    /// sample line does not parse (which would be a bug in the gate's exporter).
    pub fn parse(text: &str, at: Instant) -> Option<Scrape> {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(parse_sample)
            .collect::<Option<Vec<_>>>()?;
        Some(Scrape { at, samples })
    }

    /// The value of the one series named `name` whose labels include every pair of `labels`;
    /// `None` when there is no such series.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
            })
            .map(|s| s.value)
    }

    /// The value of a series, or 0 when the gate does not export it (the caller's check will
    /// then fail on the number, with the number shown).
    pub fn value_or_zero(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// Sum of every series named `name` (all label values).
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    /// The labels of the first series named `name` (for info gauges such as
    /// `sig_gate_config_info`).
    pub fn labels(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.samples
            .iter()
            .find(|s| s.name == name)
            .map(|s| &s.labels)
    }

    /// How much a series grew from `earlier` to this scrape.
    pub fn delta(&self, earlier: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value_or_zero(name, labels) - earlier.value_or_zero(name, labels)
    }

    /// Integer delta of a counter (counters hold integers in our exporter).
    pub fn count_delta(&self, earlier: &Scrape, name: &str, labels: &[(&str, &str)]) -> i64 {
        // Counter values are whole numbers far below 2^53: the conversion is exact.
        self.delta(earlier, name, labels).round() as i64
    }
}

/// Parse `name{a="b",c="d"} value [timestamp]`.
fn parse_sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(at) => line.split_at(at),
        None => return None,
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches([',', ' ']);
            if let Some(after) = inner.strip_prefix('}') {
                break after;
            }
            let eq = inner.find('=')?;
            let key = inner[..eq].trim().to_owned();
            let (value, after) = parse_quoted(inner[eq + 1..].trim_start())?;
            labels.insert(key, value);
            inner = after;
        }
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A double-quoted label value with `\\`, `\"` and `\n` escapes; returns it and the rest.
fn parse_quoted(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((value, &body[at + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            other => value.push(other),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP sig_gate_verified_total Requests whose signature verified.
# TYPE sig_gate_verified_total counter
sig_gate_verified_total{slot="current"} 12
sig_gate_verified_total{slot="previous"} 3
sig_gate_config_info{fingerprint="ab12cd34",key_id="k\"2",mode="dual"} 1
sig_gate_request_duration_seconds_bucket{le="+Inf"} 15
sig_gate_nonce_cache_entries 15
"#;

    #[test]
    fn parses_names_labels_escapes_and_values() {
        let scrape = Scrape::parse(TEXT, Instant::now()).expect("parses");
        assert_eq!(scrape.samples.len(), 5);
        assert_eq!(
            scrape.value("sig_gate_verified_total", &[("slot", "current")]),
            Some(12.0)
        );
        assert_eq!(scrape.sum("sig_gate_verified_total"), 15.0);
        assert_eq!(
            scrape.value("sig_gate_nonce_cache_entries", &[]),
            Some(15.0)
        );
        let info = scrape.labels("sig_gate_config_info").expect("info");
        assert_eq!(info["key_id"], "k\"2");
        assert_eq!(info["mode"], "dual");
        assert_eq!(
            scrape.value(
                "sig_gate_request_duration_seconds_bucket",
                &[("le", "+Inf")]
            ),
            Some(15.0)
        );
        assert_eq!(
            scrape.value("sig_gate_verified_total", &[("slot", "x")]),
            None
        );
    }

    #[test]
    fn deltas_between_scrapes() {
        let before = Scrape::parse(TEXT, Instant::now()).expect("parses");
        let after = Scrape::parse(
            &TEXT.replace(r#"{slot="current"} 12"#, r#"{slot="current"} 20"#),
            Instant::now(),
        )
        .expect("parses");
        let current = [("slot", "current")];
        assert_eq!(
            after.count_delta(&before, "sig_gate_verified_total", &current),
            8
        );
        assert_eq!(
            after.count_delta(&before, "sig_gate_verified_total", &[("slot", "previous")]),
            0
        );
    }

    #[test]
    fn series_keys_round_trip() {
        let scrape = Scrape::parse(TEXT, Instant::now()).expect("parses");
        let keys: Vec<String> = scrape.samples.iter().map(Sample::series).collect();
        assert_eq!(keys[0], r#"sig_gate_verified_total{slot="current"}"#);
        assert_eq!(
            keys[2],
            r#"sig_gate_config_info{fingerprint="ab12cd34",key_id="k\"2",mode="dual"}"#
        );
        assert_eq!(keys[4], "sig_gate_nonce_cache_entries");
        let again = Scrape::parse(&format!("{} 1\n", keys[2]), Instant::now()).expect("parses");
        assert_eq!(again.samples[0].labels, scrape.samples[2].labels);
    }

    #[test]
    fn garbage_does_not_parse() {
        assert!(Scrape::parse("metric{a=\"unterminated} 1", Instant::now()).is_none());
        assert!(Scrape::parse("metric not-a-number", Instant::now()).is_none());
    }
}
