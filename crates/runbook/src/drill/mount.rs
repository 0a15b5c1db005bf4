//! A directory updated the way the kubelet updates a mounted Secret, for the phases that
//! rotate keys without restarts. Each version of the Secret is written whole to a new
//! timestamped directory (`..<time>_<n>`); the `..data` symlink is then swapped to it with one
//! rename (atomic: a reader sees the old version or the new one, never a mix); the files the
//! gate opens (`keys.toml`, one secret file per key) are symlinks `name -> ..data/name`, added
//! for names new in this version and removed for names it no longer has; the previous version's
//! directory is deleted last.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};

/// The `..data` link and its temporary twin.
const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// One mounted Secret: its directory, the version in force and the file names it shows.
/// `Debug` shows the file names, never their content.
pub(super) struct MountedSecret {
    dir: PathBuf,
    version: u32,
    /// The directory of the version in force (`None` before the first update).
    current: Option<String>,
    /// The files of the version in force: name -> content (a secret, for a key's file).
    files: BTreeMap<String, String>,
}

impl std::fmt::Debug for MountedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountedSecret")
            .field("dir", &self.dir)
            .field("version", &self.version)
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl MountedSecret {
    /// An empty mount point at `dir` (created, owner-only).
    pub(super) fn create(dir: PathBuf) -> io::Result<MountedSecret> {
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(MountedSecret {
            dir,
            version: 0,
            current: None,
            files: BTreeMap::new(),
        })
    }

    /// The path a file of the Secret is read at (through its symlink).
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether `files` is exactly the version in force.
    pub(super) fn holds(&self, files: &BTreeMap<String, String>) -> bool {
        self.current.is_some() && self.files == *files
    }

    /// Publish `files` as the next version, as the kubelet does (see the module documentation).
    pub(super) fn update(&mut self, files: BTreeMap<String, String>) -> io::Result<()> {
        self.version += 1;
        // The kubelet names it by the time of the update; the version number keeps two updates
        // within one second apart.
        let name = format!("..{}_{:04}", gate::clock::unix_now(), self.version);
        let dir = self.dir.join(&name);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        for (file, content) in &files {
            write_new(&dir.join(file), content)?;
        }
        let tmp = self.dir.join(DATA_TMP);
        match std::fs::remove_file(&tmp) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        symlink(&name, &tmp)?;
        std::fs::rename(&tmp, self.dir.join(DATA))?;
        for file in files.keys().filter(|f| !self.files.contains_key(*f)) {
            symlink(Path::new(DATA).join(file), self.dir.join(file))?;
        }
        for file in self.files.keys().filter(|f| !files.contains_key(*f)) {
            std::fs::remove_file(self.dir.join(file))?;
        }
        if let Some(previous) = self.current.replace(name) {
            std::fs::remove_dir_all(self.dir.join(previous))?;
        }
        self.files = files;
        Ok(())
    }
}

/// Write a new file readable by the owner only.
fn write_new(path: &Path, content: &str) -> io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn updates_swap_the_data_link_and_follow_the_file_names() {
        let work = crate::process::Workdir::create("mount-test").expect("workdir");
        let mut mount = MountedSecret::create(work.path().join("secret")).expect("create");
        let one = files(&[("keys.toml", "a"), ("k1", "one")]);
        mount.update(one.clone()).expect("first version");
        assert!(mount.holds(&one));
        assert_eq!(std::fs::read_to_string(mount.path("k1")).unwrap(), "one");
        assert!(
            std::fs::symlink_metadata(mount.path("k1"))
                .unwrap()
                .file_type()
                .is_symlink()
        );

        mount
            .update(files(&[("keys.toml", "b"), ("k2", "two")]))
            .expect("second version");
        assert_eq!(
            std::fs::read_to_string(mount.path("keys.toml")).unwrap(),
            "b"
        );
        assert_eq!(std::fs::read_to_string(mount.path("k2")).unwrap(), "two");
        assert!(!mount.path("k1").exists(), "a removed key's file is gone");
        assert!(!mount.holds(&one));
        let versions: Vec<String> = std::fs::read_dir(work.path().join("secret"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA)
            .collect();
        assert_eq!(versions.len(), 1, "only the version in force: {versions:?}");
        assert!(versions[0].ends_with("_0002"));
    }
}
