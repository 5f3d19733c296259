//! Temporary trees: the directories and files each test builds its policy over, and
//! the spawn-mode policy most `fdbroker run` tests share.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory under /tmp, world-traversable, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "fdbroker-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    /// Write `content` at `rel` (creating parents) with `mode`, owned by root.
    pub fn file(&self, rel: &str, content: &[u8], mode: u32) -> PathBuf {
        let p = self.path.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    pub fn dir(&self, rel: &str, mode: u32) -> PathBuf {
        let p = self.path.join(rel);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A spawn-mode policy, written at `TREE/run.toml`: client `name` is `nobody`, may read
/// and list `TREE/in/`, and the sandbox may also run programs from `programs`.
pub fn run_policy(tree: &TempDir, name: &str, programs: &Path) -> PathBuf {
    tree.file(
        "run.toml",
        format!(
            r#"
[sandbox]
read_only = ["/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache", "{programs}"]

[[client]]
name = "{name}"
users = ["nobody"]

  [[client.allow]]
  path = "{dir}/in/"
  access = ["read", "directory"]
"#,
            programs = programs.display(),
            dir = tree.path().display()
        )
        .as_bytes(),
        0o644,
    )
}
