//! The shared table of malformed signature headers, `tests/vectors/malformed-headers.json`:
//! each case a change to a correctly signed request and the reason the gate must answer it
//! with. The verifier's unit tests, the black-box tests (`tests/gate.rs`) and the Python
//! interop tests read that one file, so a case added there is checked by each of them; the
//! module is public so that the runbook tooling can play the same cases against a gate.
//!
//! [`Cases::parse`] checks every header name, value and reason once, so applying a [`Case`]
//! cannot fail. The file's own `description` says what each operation does; [`Case::apply`]
//! is the Rust reading of it.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::Reason;

/// Version of the file layout this module reads.
pub const VERSION: u32 = 1;

/// Why the table could not be read: the case's name and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not JSON of the expected shape.
    #[error("malformed-headers table: {0}")]
    Json(#[from] serde_json::Error),
    /// A layout version this module does not read.
    #[error("malformed-headers table: version {0}, expected {VERSION}")]
    Version(u32),
    /// A header name, value or reason that cannot be used.
    #[error("malformed-headers case {case:?}: {problem}")]
    Case {
        /// The case's name.
        case: String,
        /// What is wrong.
        problem: String,
    },
}

/// Every case of the table, in file order.
#[derive(Debug, Clone)]
pub struct Cases(Vec<Case>);

/// One change to a correctly signed request's headers, and the expected rejection.
#[derive(Debug, Clone)]
pub struct Case {
    name: String,
    reason: Reason,
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    uppercase: Vec<HeaderName>,
    duplicate: Vec<HeaderName>,
    append: Vec<(HeaderName, HeaderValue)>,
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: u32,
    #[allow(dead_code)] // read by people, not by the tests
    description: String,
    cases: Vec<RawCase>,
}

/// One case as written; the operations' order is fixed by [`Case::apply`], not by the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    set_base64: BTreeMap<String, String>,
    #[serde(default)]
    uppercase: Vec<String>,
    #[serde(default)]
    duplicate: Vec<String>,
    #[serde(default)]
    append: Vec<(String, String)>,
    reason: String,
}

impl Cases {
    /// Read the table from the file's text, checking every name, value and reason.
    pub fn parse(json: &str) -> Result<Cases, Error> {
        let raw: RawFile = serde_json::from_str(json)?;
        if raw.version != VERSION {
            return Err(Error::Version(raw.version));
        }
        raw.cases
            .into_iter()
            .map(Case::from_raw)
            .collect::<Result<_, _>>()
            .map(Cases)
    }

    /// The cases in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, Case> {
        self.0.iter()
    }

    /// How many cases the table holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for a table without cases.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Cases {
    type Item = &'a Case;
    type IntoIter = std::slice::Iter<'a, Case>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Case {
    fn from_raw(raw: RawCase) -> Result<Case, Error> {
        let problem = |problem: String| Error::Case {
            case: raw.name.clone(),
            problem,
        };
        let header_name = |text: &str| {
            HeaderName::from_bytes(text.as_bytes())
                .map_err(|_| problem(format!("{text:?} is not a header name")))
        };
        let line = |header: &str, bytes: &[u8]| {
            let value = HeaderValue::from_bytes(bytes)
                .map_err(|_| problem(format!("the value for {header} cannot be sent")))?;
            Ok::<_, Error>((header_name(header)?, value))
        };
        let names = |list: &[String]| {
            list.iter()
                .map(|n| header_name(n))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut set = Vec::new();
        for (header, value) in &raw.set {
            set.push(line(header, value.as_bytes())?);
        }
        for (header, encoded) in &raw.set_base64 {
            let bytes = STANDARD
                .decode(encoded)
                .map_err(|_| problem(format!("set_base64 for {header} is not base64")))?;
            set.push(line(header, &bytes)?);
        }
        let append = raw
            .append
            .iter()
            .map(|(header, value)| line(header, value.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let reason = Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == raw.reason)
            .ok_or_else(|| problem(format!("{:?} is not a reason", raw.reason)))?;
        let remove = names(&raw.remove)?;
        let uppercase = names(&raw.uppercase)?;
        let duplicate = names(&raw.duplicate)?;
        if remove.is_empty()
            && set.is_empty()
            && uppercase.is_empty()
            && duplicate.is_empty()
            && append.is_empty()
        {
            return Err(problem("changes nothing".into()));
        }
        Ok(Case {
            name: raw.name,
            reason,
            remove,
            set,
            uppercase,
            duplicate,
            append,
        })
    }

    /// What the case breaks, for failure messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The reason the gate must reject the changed request with.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The header lines of `signed` (a correctly signed request's, repeats and order kept)
    /// after this case's changes: remove, set, uppercase, duplicate, append, in that order.
    pub fn apply<'h>(
        &self,
        signed: impl IntoIterator<Item = (&'h HeaderName, &'h HeaderValue)>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let replaced = |name: &HeaderName| {
            self.remove.contains(name) || self.set.iter().any(|(n, _)| n == name)
        };
        let mut lines: Vec<(HeaderName, HeaderValue)> = signed
            .into_iter()
            .filter(|(name, _)| !replaced(name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        lines.extend(self.set.iter().cloned());
        for (name, value) in &mut lines {
            if self.uppercase.contains(name) {
                *value = HeaderValue::from_bytes(&value.as_bytes().to_ascii_uppercase())
                    .expect("ASCII uppercase keeps every byte a header value allows");
            }
        }
        for name in &self.duplicate {
            let copies: Vec<_> = lines.iter().filter(|(n, _)| n == name).cloned().collect();
            lines.extend(copies);
        }
        lines.extend(self.append.iter().cloned());
        lines
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::protocol;

    fn table() -> Cases {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/vectors/malformed-headers.json"
        );
        let text = std::fs::read_to_string(path).expect("the table is in the repository");
        Cases::parse(&text).expect("the table parses")
    }

    fn signed() -> Vec<(HeaderName, HeaderValue)> {
        [
            (protocol::KEY_ID, "current"),
            (protocol::TIMESTAMP, "1764000000"),
            (protocol::NONCE, "nonce-0123456789abcdef"),
            (protocol::SIGNATURE, "ab"),
        ]
        .into_iter()
        .map(|(n, v)| (n, HeaderValue::from_static(v)))
        .collect()
    }

    fn case(json: &str) -> Result<Case, Error> {
        let text = format!(r#"{{"version":1,"description":"","cases":[{json}]}}"#);
        Cases::parse(&text).map(|cases| cases.0[0].clone())
    }

    fn applied(json: &str) -> Vec<(String, Vec<u8>)> {
        let signed = signed();
        case(json)
            .expect("test case parses")
            .apply(signed.iter().map(|(n, v)| (n, v)))
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn line(name: &str, value: &[u8]) -> (String, Vec<u8>) {
        (name.to_owned(), value.to_vec())
    }

    #[test]
    fn the_table_names_each_case_once_and_covers_every_header() {
        let cases = table();
        let mut names = HashSet::new();
        for case in &cases {
            assert!(names.insert(case.name()), "{:?} twice", case.name());
            assert!(
                matches!(
                    case.reason(),
                    Reason::MalformedSignature | Reason::MissingSignature
                ),
                "{}: only header syntax belongs here",
                case.name()
            );
        }
        let touched = |header: &HeaderName| {
            cases.iter().any(|c| {
                c.set.iter().any(|(n, _)| n == header) && c.reason() == Reason::MalformedSignature
            })
        };
        for header in [
            protocol::KEY_ID,
            protocol::TIMESTAMP,
            protocol::NONCE,
            protocol::SIGNATURE,
            protocol::SIGNATURES,
        ] {
            assert!(touched(&header), "no malformed value for {header}");
            assert!(
                cases
                    .iter()
                    .any(|c| c.duplicate.contains(&header)
                        || c.append.iter().any(|(n, _)| *n == header)),
                "{header} is never repeated"
            );
        }
    }

    #[test]
    fn operations_apply_in_the_documented_order() {
        assert_eq!(
            applied(
                r#"{"name":"n","remove":["X-Gate-Key-Id"],"set":{"X-Gate-Nonce":"x"},
                   "uppercase":["X-Gate-Signature"],"duplicate":["X-Gate-Signature"],
                   "append":[["X-Gate-Extra","a"]],"reason":"malformed_signature"}"#
            ),
            vec![
                line("x-gate-timestamp", b"1764000000"),
                line("x-gate-signature", b"AB"),
                line("x-gate-nonce", b"x"),
                line("x-gate-signature", b"AB"),
                line("x-gate-extra", b"a"),
            ]
        );
        assert_eq!(
            applied(
                r#"{"name":"n","set_base64":{"X-Gate-Nonce":"/w=="},
                   "reason":"missing_signature"}"#
            )[3],
            line("x-gate-nonce", b"\xff")
        );
    }

    #[test]
    fn unusable_cases_are_refused_with_their_name() {
        for (json, problem) in [
            (
                r#"{"name":"a","reason":"malformed_signature"}"#,
                "changes nothing",
            ),
            (
                r#"{"name":"b","remove":["X-Gate-Nonce"],"reason":"nope"}"#,
                "not a reason",
            ),
            (
                r#"{"name":"c","remove":["bad name"],"reason":"bad_signature"}"#,
                "not a header name",
            ),
            (
                r#"{"name":"d","set":{"X-A":"a\nb"},"reason":"bad_signature"}"#,
                "cannot be sent",
            ),
            (
                r#"{"name":"e","set_base64":{"X-A":"!"},"reason":"bad_signature"}"#,
                "not base64",
            ),
        ] {
            let error = case(json).expect_err(json).to_string();
            assert!(error.contains(problem), "{json}: {error}");
        }
        assert!(case(r#"{"name":"f","typo":[],"reason":"bad_signature"}"#).is_err());
    }
}
