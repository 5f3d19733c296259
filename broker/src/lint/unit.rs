//! Does the service unit grant the capabilities the policy needs? A policy that grants
//! `write`, `read-write` or `create` needs `CAP_DAC_OVERRIDE`, and one that gives
//! created files an `owner` or `group` needs `CAP_CHOWN` (see `confine::capabilities`);
//! a unit that does not grant them makes the broker refuse to start, which an operator
//! would rather learn from `policy check` than from a failed `systemctl start`.
//!
//! The unit read is the installed `fdbroker.service` (the first of the unit directories
//! systemd searches, with its drop-ins), or, where none is installed, the one this
//! binary ships (`broker/systemd/fdbroker.service`). Only the lines that decide it are
//! interpreted, as `systemd.exec(5)` defines them: `CapabilityBoundingSet=` (unset: every
//! capability; an empty assignment resets to none; `~` lists what is taken away) and
//! `AmbientCapabilities=` (unset: none), which a service running as a `User=` other
//! than root needs as well.

use caps::Capability;
use std::path::{Path, PathBuf};

/// Where systemd looks for system units, in order of precedence.
const UNIT_DIRS: [&str; 4] = [
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];
const UNIT_NAME: &str = "fdbroker.service";
/// The unit this binary ships, for a machine where none is installed.
const SHIPPED: &str = include_str!("../../systemd/fdbroker.service");

/// The most of a unit file or drop-in read: far beyond any real one.
const MAX_UNIT_FILE: u64 = 1 << 20;

/// A unit file's text: a regular file (opened non-blocking, so a FIFO cannot hang the
/// check; a device or FIFO is refused after `fstat`) of at most [`MAX_UNIT_FILE`] bytes.
fn read_unit_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > MAX_UNIT_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_UNIT_FILE} bytes"),
        ));
    }
    let mut text = String::new();
    file.take(MAX_UNIT_FILE).read_to_string(&mut text)?;
    Ok(text)
}

/// One assignment of a line that matters, where it was written.
#[derive(Debug, Clone)]
struct Assignment {
    file: String,
    line: usize,
    key: Key,
    value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Bounding,
    Ambient,
    User,
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::Bounding => "CapabilityBoundingSet=",
            Key::Ambient => "AmbientCapabilities=",
            Key::User => "User=",
        }
    }
}

/// A service unit and its drop-ins, as far as capabilities go.
#[derive(Debug, Clone)]
pub struct Unit {
    /// What to call it in a message: its path, or "the shipped fdbroker.service".
    pub name: String,
    assignments: Vec<Assignment>,
}

impl Unit {
    /// The installed `fdbroker.service` with its drop-ins, else the shipped one.
    pub fn installed_or_shipped() -> Unit {
        for dir in UNIT_DIRS {
            let path = Path::new(dir).join(UNIT_NAME);
            if let Ok(unit) = Unit::read_with(&path, &UNIT_DIRS.map(Path::new)) {
                return unit;
            }
        }
        Unit::parse(
            format!("the shipped {UNIT_NAME} (none is installed)"),
            &[(String::from(UNIT_NAME), SHIPPED.to_owned())],
        )
    }

    /// The unit at `path` (`policy check --unit`) and the drop-ins beside it
    /// (`NAME.d/*.conf` in its directory, in name order).
    pub fn read(path: &Path) -> std::io::Result<Unit> {
        Unit::read_with(path, &[])
    }

    /// The unit at `path` with its drop-ins from its own directory and from `dirs`,
    /// as systemd reads an installed unit's.
    fn read_with(path: &Path, dirs: &[&Path]) -> std::io::Result<Unit> {
        let text = read_unit_file(path)?;
        let mut files = vec![(path.display().to_string(), text)];
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let mut dropins: Vec<PathBuf> = Vec::new();
        if let Some(name) = name {
            for dir in dirs.iter().copied().chain(path.parent()) {
                if let Ok(entries) = std::fs::read_dir(dir.join(format!("{name}.d"))) {
                    dropins.extend(
                        entries
                            .filter_map(Result::ok)
                            .map(|e| e.path())
                            .filter(|p| p.extension().is_some_and(|x| x == "conf")),
                    );
                }
            }
        }
        // systemd orders drop-ins by file name, whichever directory holds them.
        dropins.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        dropins.dedup();
        for d in dropins {
            if let Ok(text) = read_unit_file(&d) {
                files.push((d.display().to_string(), text));
            }
        }
        Ok(Unit::parse(path.display().to_string(), &files))
    }

    fn parse(name: String, files: &[(String, String)]) -> Unit {
        let mut assignments = Vec::new();
        for (file, text) in files {
            let mut in_service = false;
            for (i, raw) in text.lines().enumerate() {
                let line = raw.trim();
                if line.starts_with('[') {
                    in_service = line == "[Service]";
                    continue;
                }
                if !in_service || line.starts_with(['#', ';']) {
                    continue;
                }
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                let key = match key.trim() {
                    "CapabilityBoundingSet" => Key::Bounding,
                    "AmbientCapabilities" => Key::Ambient,
                    "User" => Key::User,
                    _ => continue,
                };
                assignments.push(Assignment {
                    file: file.clone(),
                    line: i + 1,
                    key,
                    value: value.trim().to_owned(),
                });
            }
        }
        Unit { name, assignments }
    }

    /// Whether the service runs as a user other than root (then `cap` must be
    /// ambient too).
    fn runs_unprivileged(&self) -> bool {
        self.assignments
            .iter()
            .rfind(|a| a.key == Key::User)
            .is_some_and(|a| !matches!(a.value.as_str(), "" | "root" | "0"))
    }

    /// Whether the list `key` ends up holding `cap`, replaying its assignments in order.
    fn holds(&self, key: Key, cap: Capability) -> bool {
        let want = cap.to_string();
        // Unset: the bounding set is full, the ambient set empty.
        let mut held = key == Key::Bounding;
        let mut first = true;
        for a in self.assignments.iter().filter(|a| a.key == key) {
            if a.value.is_empty() {
                held = false;
                first = false;
                continue;
            }
            let (inverted, list) = match a.value.strip_prefix('~') {
                Some(rest) => (true, rest),
                None => (false, a.value.as_str()),
            };
            let named = list
                .split_whitespace()
                .any(|c| c.eq_ignore_ascii_case(&want));
            held = match (inverted, first) {
                (false, true) => named,
                (false, false) => held || named,
                (true, true) => !named,
                (true, false) => held && !named,
            };
            first = false;
        }
        held
    }

    /// Why `cap` is not granted: each list that lacks it, with the lines that set it
    /// (or that it is unset); `None` when the unit grants it.
    pub fn lacks(&self, cap: Capability) -> Option<String> {
        let mut keys = vec![Key::Bounding];
        if self.runs_unprivileged() {
            keys.push(Key::Ambient);
        }
        let missing: Vec<String> = keys
            .into_iter()
            .filter(|&k| !self.holds(k, cap))
            .map(|k| {
                let lines: Vec<String> = self
                    .assignments
                    .iter()
                    .filter(|a| a.key == k)
                    .map(|a| format!("{}:{}", a.file, a.line))
                    .collect();
                if lines.is_empty() {
                    format!("{} (not set)", k.name())
                } else {
                    format!("{} at {}", k.name(), lines.join(", "))
                }
            })
            .collect();
        (!missing.is_empty()).then(|| missing.join(" and "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(text: &str) -> Unit {
        Unit::parse("u".into(), &[("u".into(), text.into())])
    }

    #[test]
    fn the_shipped_unit_grants_reading_only() {
        let u = Unit::parse("s".into(), &[("s".into(), SHIPPED.into())]);
        assert!(u.lacks(Capability::CAP_DAC_READ_SEARCH).is_none());
        let why = u.lacks(Capability::CAP_DAC_OVERRIDE).expect("not granted");
        assert!(
            why.contains("CapabilityBoundingSet= at s:")
                && why.contains("AmbientCapabilities= at s:"),
            "{why}"
        );
    }

    #[test]
    fn assignments_replay_as_systemd_reads_them() {
        let cap = Capability::CAP_CHOWN;
        // Root: the bounding set alone decides; unset is full.
        assert!(unit("[Service]\n").lacks(cap).is_none());
        assert!(
            unit("[Service]\nCapabilityBoundingSet=~CAP_CHOWN\n")
                .lacks(cap)
                .is_some()
        );
        // Lists merge; an empty assignment resets.
        let u = unit(
            "[Service]\nUser=x\nCapabilityBoundingSet=CAP_A\nCapabilityBoundingSet=CAP_CHOWN\nAmbientCapabilities=CAP_CHOWN\n",
        );
        assert!(u.lacks(cap).is_none());
        let u = unit(
            "[Service]\nUser=x\nCapabilityBoundingSet=CAP_CHOWN\nCapabilityBoundingSet=\nAmbientCapabilities=CAP_CHOWN\n",
        );
        assert_eq!(
            u.lacks(cap).as_deref(),
            Some("CapabilityBoundingSet= at u:3, u:4")
        );
        // Another section's line counts for nothing.
        let u = unit("[Install]\nAmbientCapabilities=CAP_CHOWN\n[Service]\nUser=x\n");
        assert_eq!(
            u.lacks(cap).as_deref(),
            Some("AmbientCapabilities= (not set)")
        );
    }
}
