//! The registry's refusals, each naming the file and the entry, and what a good registry
//! builds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::*;
use crate::keyring::Secret;

const SECRET: &str = "registry-secret-0123456789-abcdefghijkl";
const PUBLIC: &str = "x4yuD32xrmXOMf4taSvByhyR9qZt8NBXhP9P4vNwbAs";

/// Files by path, read as the loader reads them; the paths the loader asked for.
struct Files {
    files: HashMap<PathBuf, Vec<u8>>,
    asked: Vec<PathBuf>,
}

impl Files {
    fn new(registry: &str) -> Files {
        let mut files = HashMap::new();
        files.insert(
            PathBuf::from("/etc/gate/keys.toml"),
            registry.as_bytes().to_vec(),
        );
        files.insert(
            PathBuf::from("/etc/gate/secrets/lg"),
            format!("{SECRET}\n").into_bytes(),
        );
        files.insert(PathBuf::from("/run/abs"), SECRET.as_bytes().to_vec());
        files.insert(PathBuf::from("/etc/gate/short"), b"short\n".to_vec());
        files.insert(PathBuf::from("/etc/gate/binary"), vec![0xff; 40]);
        Files {
            files,
            asked: Vec::new(),
        }
    }

    fn load(&mut self, reserved: &[(&str, &'static str)]) -> Result<Vec<Key>, RegistryError> {
        let files = &self.files;
        let asked = &mut self.asked;
        load(
            Path::new("/etc/gate/keys.toml"),
            false,
            reserved,
            &mut |path| {
                asked.push(path.to_owned());
                files
                    .get(path)
                    .map(|bytes| Zeroizing::new(bytes.clone()))
                    .ok_or_else(|| "No such file or directory (os error 2)".to_owned())
            },
        )
    }
}

fn refusal(registry: &str) -> String {
    let error = Files::new(registry)
        .load(&[("current", "INTERSERVICE_HMAC_KEY_ID")])
        .expect_err("refused");
    assert_eq!(error.file, Path::new("/etc/gate/keys.toml"));
    let message = error.to_string();
    assert!(message.starts_with("/etc/gate/keys.toml: "), "{message}");
    assert!(!message.contains(SECRET), "{message}");
    message
}

#[test]
fn a_good_registry_builds_its_keys_in_file_order() {
    let mut files = Files::new(&format!(
        r#"
        [[key]]
        id = "lg-1"
        caller = "langgraph"
        alg = "hmac-sha256"
        secret_file = "secrets/lg"

        [[key]]
        id = "lg-ed"
        caller = "langgraph"
        alg = "ed25519"
        public_key = "{PUBLIC}"
        observe = true

        [[key]]
        id = "bl-1"
        caller = "billing"
        alg = "hmac-sha256"
        secret_file = "/run/abs"
        observe = false
        "#
    ));
    let keys = files.load(&[]).expect("valid");
    let summary: Vec<(&str, &str, &str, bool)> = keys
        .iter()
        .map(|k| (k.id(), k.caller(), k.algorithm().as_str(), k.observe()))
        .collect();
    assert_eq!(
        summary,
        [
            ("lg-1", "langgraph", "hmac-sha256", false),
            ("lg-ed", "langgraph", "ed25519", true),
            ("bl-1", "billing", "hmac-sha256", false),
        ]
    );
    // The trailing newline is stripped; a relative secret_file is beside the registry.
    assert_eq!(keys[0].fingerprint(), Secret::new(SECRET).fingerprint());
    assert_eq!(keys[2].fingerprint(), Secret::new(SECRET).fingerprint());
    assert_eq!(
        files.asked,
        [
            PathBuf::from("/etc/gate/keys.toml"),
            PathBuf::from("/etc/gate/secrets/lg"),
            PathBuf::from("/run/abs"),
        ]
    );
    assert_eq!(
        keys[1].fingerprint(),
        PublicKey::parse(PUBLIC).expect("valid").fingerprint()
    );
    assert!(keys.iter().all(|k| k.slot().is_none()));
}

#[test]
fn an_empty_registry_has_no_keys() {
    assert!(Files::new("").load(&[]).expect("valid").is_empty());
}

#[test]
fn every_refusal_names_the_file_and_the_entry() {
    let hmac = |id: &str, extra: &str| {
        format!("[[key]]\nid = \"{id}\"\ncaller = \"langgraph\"\nalg = \"hmac-sha256\"\n{extra}\n")
    };
    let good = hmac("lg-1", "secret_file = \"secrets/lg\"");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("{good}[[key]]\nid = \"lg-2\"\ncaller = \"langgraph\"\nalg = \"hmac-sha256\"\nsecret_file = \"secrets/lg\"\nsecrte = 1\n"),
            "key \"lg-2\"",
            "unknown field `secrte`",
        ),
        (format!("{good}{good}"), "key \"lg-1\"", "duplicate id"),
        (
            hmac("current", "secret_file = \"secrets/lg\""),
            "key \"current\"",
            "INTERSERVICE_HMAC_KEY_ID",
        ),
        (hmac("lg-1", ""), "key \"lg-1\"", "needs secret_file"),
        (
            hmac("lg-1", &format!("secret_file = \"secrets/lg\"\npublic_key = \"{PUBLIC}\"")),
            "key \"lg-1\"",
            "not public_key",
        ),
        (
            "[[key]]\nid = \"ed\"\ncaller = \"c\"\nalg = \"ed25519\"\n".into(),
            "key \"ed\"",
            "needs public_key",
        ),
        (
            format!("[[key]]\nid = \"ed\"\ncaller = \"c\"\nalg = \"ed25519\"\npublic_key = \"{PUBLIC}\"\nsecret_file = \"/run/abs\"\n"),
            "key \"ed\"",
            "not secret_file",
        ),
        (
            "[[key]]\nid = \"ed\"\ncaller = \"c\"\nalg = \"ed25519\"\npublic_key = \"AAAA\"\n".into(),
            "key \"ed\"",
            "public_key is not base64url",
        ),
        (hmac("lg-1", "secret_file = \"/etc/gate/short\""), "key \"lg-1\"", "shorter than 32"),
        (hmac("lg-1", "secret_file = \"/etc/gate/binary\""), "key \"lg-1\"", "not UTF-8"),
        (hmac("lg-1", "secret_file = \"missing\""), "key \"lg-1\"", "/etc/gate/missing"),
        (
            "[[key]]\nid = \"x\"\ncaller = \"c\"\nalg = \"rsa\"\nsecret_file = \"/run/abs\"\n".into(),
            "key \"x\"",
            "alg \"rsa\"",
        ),
        (
            "[[key]]\nid = \"x\"\ncaller = \"shared\"\nalg = \"hmac-sha256\"\nsecret_file = \"/run/abs\"\n".into(),
            "key \"x\"",
            "reserved",
        ),
        (
            "[[key]]\nid = \"x\"\ncaller = \"two words\"\nalg = \"hmac-sha256\"\nsecret_file = \"/run/abs\"\n".into(),
            "key \"x\"",
            "caller",
        ),
        (
            "[[key]]\nid = \"bad id\"\ncaller = \"c\"\nalg = \"hmac-sha256\"\nsecret_file = \"/run/abs\"\n".into(),
            "[[key]] number 1",
            "not a key id",
        ),
        (
            format!("{good}[[key]]\ncaller = \"c\"\nalg = \"hmac-sha256\"\n"),
            "[[key]] number 2",
            "missing field `id`",
        ),
        (format!("{good}observe = \"yes\"\n"), "key \"lg-1\"", "invalid type"),
        ("keys = []\n".into(), "", "unknown field `keys`"),
        ("key = 1\n".into(), "", "array of tables"),
        ("[[key]\n".into(), "", "line 1, column"),
    ];
    for (registry, entry, problem) in cases {
        let message = refusal(&registry);
        assert!(message.contains(entry), "{registry}\n-> {message}");
        assert!(message.contains(problem), "{registry}\n-> {message}");
    }
}

#[test]
fn an_unreadable_registry_is_named() {
    let error = load(Path::new("/nowhere/keys.toml"), false, &[], &mut |_| {
        Err("No such file or directory (os error 2)".into())
    })
    .expect_err("refused");
    assert_eq!(
        error.to_string(),
        "/nowhere/keys.toml: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn weak_secrets_need_the_switch() {
    let registry =
        "[[key]]\nid = \"w\"\ncaller = \"c\"\nalg = \"hmac-sha256\"\nsecret_file = \"short\"\n";
    let files = Files::new(registry);
    let read = |path: &Path| {
        files
            .files
            .get(path)
            .map(|bytes| Zeroizing::new(bytes.clone()))
            .ok_or_else(|| "missing".to_owned())
    };
    let path = Path::new("/etc/gate/keys.toml");
    assert!(load(path, false, &[], &mut |p| read(p)).is_err());
    let keys = load(path, true, &[], &mut |p| read(p)).expect("allowed");
    assert_eq!(keys[0].fingerprint(), Secret::new("short").fingerprint());
}
