//! Build script of the `sig-gate` binary: records which commit it was built from, for
//! `sig-gate --version`.
//!
//! The commit is `git rev-parse --short HEAD` when the sources are a git checkout and git
//! runs; otherwise `SIG_GATE_COMMIT` from the build's environment (the Docker build context
//! holds no `.git`, so the Dockerfile passes it as a build argument); otherwise `unknown`.
//! Whatever the source, only `0-9 a-z A-Z . _ -` (at most 40 characters) is accepted, so the
//! value can go into a version line and a log field as it is.

use std::path::Path;
use std::process::Command;

/// The variable a build without `.git` takes the commit from.
const COMMIT_VAR: &str = "SIG_GATE_COMMIT";

fn main() {
    println!("cargo::rerun-if-env-changed={COMMIT_VAR}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let from_git = root
        .join(".git")
        .exists()
        .then(|| git_commit(root))
        .flatten();
    let commit = from_git
        .or_else(|| std::env::var(COMMIT_VAR).ok().filter(|c| plausible(c)))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env=SIG_GATE_BUILD_COMMIT={commit}");
}

/// The checkout's commit, and the files whose change means another commit is checked out.
fn git_commit(root: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        out.status.success().then(|| text.trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).filter(|c| plausible(c))?;
    // HEAD names the branch (or the commit, detached); the branch's ref file or packed-refs
    // changes with each commit. In a worktree HEAD is in its own git dir, refs in the common one.
    // Only files that exist: cargo reruns a script on every build while one it watches is missing.
    let watch = |path: String| {
        if Path::new(&path).exists() {
            println!("cargo::rerun-if-changed={path}");
        }
    };
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        watch(format!("{git_dir}/HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]) {
        watch(format!("{common}/packed-refs"));
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch(format!("{common}/{branch}"));
        }
    }
    Some(commit)
}

/// A commit name that can be printed as it is.
fn plausible(commit: &str) -> bool {
    (1..=40).contains(&commit.len())
        && commit
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
