//! The sandbox a worker locks itself into before it touches untrusted data.
//!
//! The worker parses hostile files, so it must be able to do nothing with the system except
//! ask its broker for descriptors: no root, no capabilities in any set, `no_new_privs`,
//! Landlock with every filesystem right handled and none granted (except an optional
//! read-only allowlist), no TCP, no abstract Unix sockets or signals beyond the sandbox, and a
//! seccomp filter for what Landlock leaves open (`chmod`, `chown`, xattrs, new sockets,
//! `ptrace`, mounts, namespaces, executing from memory, typing into a terminal with
//! `TIOCSTI`, ...). Descriptors the process already holds (the broker connection, stdio) keep
//! working.
//!
//! Two properties hold on every kernel (the seccomp module documentation says how, and
//! what remains):
//!
//! - **No new socket reaches anything.** `socket`, `connect`, `bind` and `listen` are
//!   refused, so are `sendto` with an address and every `socketpair` but an `AF_UNIX`
//!   stream or seqpacket one (a pair connected to itself). Connect to the broker before
//!   applying; a program that needs any other connection opens it before applying too, or
//!   inherits it. Do not hold a datagram socket: its `sendmsg` can name any address, which
//!   seccomp cannot see (Landlock refuses Unix socket paths from ABI 9).
//! - **Nothing executes that is not beneath an [`allow_read_exec`](Sandbox::allow_read_exec)
//!   path.** `memfd_create` is refused without `MFD_NOEXEC_SEAL` and `execveat` with
//!   `AT_EMPTY_PATH` (`fexecve`) is refused, so a program copied into memory cannot be run;
//!   everything else Landlock checks by path. Do not hold an executable memfd when applying.
//!
//! ```no_run
//! use fdbroker_worker::sandbox::Sandbox;
//!
//! let broker = fdbroker_worker::Client::from_env()?; // connect first: nothing is reachable after
//! let report = Sandbox::new().apply()?;
//! eprintln!("{report}");
//! let file = broker.open("/var/spool/quarantine/sample.bin")?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Single-threaded only
//!
//! Apply the sandbox while the process has exactly one thread: before starting any thread or
//! runtime, or in a child just forked (spawn mode). Most of what it sets applies to the
//! calling thread only, so other threads would stay privileged; [`Sandbox::apply`] checks
//! `/proc/self/task` first and fails with [`SandboxError::Threads`] before changing anything.
//! For spawn mode, [`Sandbox::prepare`] does everything that reads files, allocates much or
//! may fail for configuration reasons in the parent, and [`PreparedSandbox::apply`] in the
//! child is then only system calls.
//!
//! # Order, and why
//!
//! 1. Check the thread count.
//! 2. Resolve user and group (needs `/etc/passwd`, which Landlock will hide), open the
//!    allowlisted paths as `O_PATH` descriptors while privileged, build the Landlock ruleset
//!    and compile the seccomp filters ([`Sandbox::prepare`]). Strict mode fails here, with
//!    nothing changed yet, on a kernel lacking a required Landlock feature.
//! 3. Clear the bounding and ambient capability sets. Dropping from the bounding set needs
//!    `CAP_SETPCAP`, which the id change takes away, so it cannot come later.
//! 4. `setgroups([])`, `setresgid`, `setresuid`: real, effective and saved ids all change, so
//!    there is no saved root id to return to. Groups first, since that needs `CAP_SETGID`.
//! 5. Clear the effective, permitted and inheritable sets, then verify: ids read back,
//!    `setuid(0)` and `setgid(0)` fail, every capability set in `/proc/self/status` is 0.
//!    This comes before Landlock, which hides `/proc`.
//! 6. `PR_SET_NO_NEW_PRIVS`, required by Landlock and seccomp for an unprivileged process,
//!    and ending privilege gain through `execve` of setuid or file-capability binaries.
//! 7. Enforce Landlock.
//! 8. Install seccomp last, so that none of the steps above trips over it.

mod capabilities;
mod dispatch;
mod error;
mod identity;
mod landlock;
mod report;
mod seccomp;
mod threads;

use std::fmt;
use std::path::Path;

pub use self::error::SandboxError;
pub use self::identity::Identity;
pub use self::landlock::{Enforcement, LandlockReport};
pub use self::report::Report;
/// The system calls transparent mode's notification filter takes over from this
/// sandbox's refusals (`fdbroker-transparent`): listed once, here, so the two cannot
/// drift apart.
pub use self::seccomp::{METADATA, XATTR_CHANGES};

use self::identity::Ids;
use self::landlock::Allowed;

/// The sandbox to apply: who to become and what may still be read.
///
/// Defaults: user `nobody`, that user's primary group, no readable paths, strict (every part
/// of Landlock enforced, the bounding set cleared, or an error).
///
/// ```no_run
/// use fdbroker_worker::sandbox::Sandbox;
/// let report = Sandbox::new().user("scanner").allow_read_exec("/usr").apply()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a Sandbox does nothing until apply() is called"]
pub struct Sandbox {
    user: Identity,
    group: Option<Identity>,
    allowed: Vec<Allowed>,
    best_effort: bool,
    process_memory: bool,
    metadata: bool,
    keep_groups: bool,
}

impl Default for Sandbox {
    fn default() -> Sandbox {
        Sandbox::new()
    }
}

impl Sandbox {
    /// User `nobody`, its primary group, no paths, strict.
    ///
    /// ```
    /// let sandbox = fdbroker_worker::sandbox::Sandbox::new();
    /// assert_eq!(sandbox, fdbroker_worker::sandbox::Sandbox::default());
    /// ```
    pub fn new() -> Sandbox {
        Sandbox {
            user: Identity::from("nobody"),
            group: None,
            allowed: Vec::new(),
            best_effort: false,
            process_memory: false,
            metadata: false,
            keep_groups: false,
        }
    }

    /// The user to become (a name or a uid). uid 0 is refused.
    ///
    /// ```
    /// use fdbroker_worker::sandbox::Sandbox;
    /// let by_name = Sandbox::new().user("scanner");
    /// let by_id = Sandbox::new().user(4242);
    /// assert_ne!(by_name, by_id);
    /// ```
    pub fn user(mut self, user: impl Into<Identity>) -> Sandbox {
        self.user = user.into();
        self
    }

    /// The group to become (a name or a gid); default: the user's primary group. gid 0 is
    /// refused.
    ///
    /// ```
    /// let sandbox = fdbroker_worker::sandbox::Sandbox::new().user("nobody").group("nogroup");
    /// ```
    pub fn group(mut self, group: impl Into<Identity>) -> Sandbox {
        self.group = Some(group.into());
        self
    }

    /// Keeps the supplementary groups the process already holds instead of dropping them
    /// all (`setgroups([])`), for a worker that a service manager starts as its own
    /// unprivileged user with the broker socket's group (`User=scanner`,
    /// `SupplementaryGroups=fdbroker`): without `CAP_SETGID` it cannot drop them
    /// (`EPERM`), and it needs the group only to connect. The groups are read back and
    /// checked like the ids; one of them being gid 0 is refused. With every filesystem
    /// right handled by Landlock and none granted, a kept group opens only what the
    /// allowlist already allows. A worker started as root should not keep its groups: it
    /// gets the target user's alone by dropping privileges first.
    ///
    /// ```no_run
    /// use fdbroker_worker::{Client, sandbox::Sandbox};
    /// // Started as `scanner` (groups: scanner, fdbroker) with no capabilities:
    /// let broker = Client::connect("/run/fdbroker/fdbroker.sock")?; // needs the group
    /// let report = Sandbox::new().user("scanner").keep_groups().apply()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn keep_groups(mut self) -> Sandbox {
        self.keep_groups = true;
        self
    }

    /// Allows reading `path` and, if it is a directory, everything beneath it (listing
    /// included). Nothing else is granted there: no writing, creating, truncating, executing.
    /// Ordinary permission checks still apply on top, as the sandbox's user.
    ///
    /// ```
    /// let sandbox = fdbroker_worker::sandbox::Sandbox::new().allow_read("/usr/share/zoneinfo");
    /// ```
    pub fn allow_read(self, path: impl AsRef<Path>) -> Sandbox {
        self.allow(path.as_ref(), false, false)
    }

    /// Like [`allow_read`](Sandbox::allow_read), and also executing files beneath `path`:
    /// what spawn mode needs for `/usr`, `/lib` and the like to `execve` the worker. These
    /// paths are the only place a program can be executed from (by path: `fexecve` and
    /// memfds are refused), so never name a tree the broker grants write access to.
    ///
    /// ```
    /// let sandbox = fdbroker_worker::sandbox::Sandbox::new()
    ///     .allow_read_exec("/usr")
    ///     .allow_read_exec("/lib");
    /// ```
    pub fn allow_read_exec(self, path: impl AsRef<Path>) -> Sandbox {
        self.allow(path.as_ref(), true, false)
    }

    /// Accepts partial enforcement where it depends on the environment: Landlock parts the
    /// running kernel lacks, and a bounding set that cannot be cleared because the process
    /// has no `CAP_SETPCAP`. What was and was not enforced is in the [`Report`] (and its
    /// `Display` marks it `INCOMPLETE`), never silent. The id change, the other capability
    /// sets, `no_new_privs` and seccomp stay mandatory: every kernel and process can do them.
    ///
    /// ```no_run
    /// let report = fdbroker_worker::sandbox::Sandbox::new().best_effort().apply()?;
    /// if !report.is_complete() {
    ///     eprintln!("{report}"); // says what is missing
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn best_effort(mut self) -> Sandbox {
        self.best_effort = true;
        self
    }

    /// Allows reading and writing beneath the directory `path`: creating, removing and
    /// renaming files and directories, writing and truncating files; never executing.
    /// For a private scratch directory (`fdbroker run --transparent`'s `TMPDIR`), never
    /// for a tree the broker serves: anything written here is the worker's.
    pub fn allow_read_write(self, path: impl AsRef<Path>) -> Sandbox {
        self.allow(path.as_ref(), false, true)
    }

    /// [`Sandbox::allow_read_write`], and also making symbolic links beneath `path`: for
    /// transparent mode's supervisor alone, whose stand-in listings (`fdbroker-transparent`'s
    /// `listing.rs`) hold one entry of the same type per name, links included. The
    /// program's own, nested domain does not get it.
    pub fn allow_read_write_links(mut self, path: impl AsRef<Path>) -> Sandbox {
        self.allowed.push(Allowed {
            path: path.as_ref().to_owned(),
            execute: false,
            write: true,
            symlinks: true,
        });
        self
    }

    /// One entry of the Landlock allowlist (read always; execute and write as given).
    fn allow(mut self, path: &Path, execute: bool, write: bool) -> Sandbox {
        self.allowed.push(Allowed {
            path: path.to_owned(),
            execute,
            write,
            symlinks: false,
        });
        self
    }

    /// Leaves `process_vm_readv` and `process_vm_writev` allowed, for `fdbroker run
    /// --transparent`'s supervisor alone: it reads the paths of the calls it answers from
    /// its target's memory and writes `stat` results back. The kernel still requires
    /// what `ptrace` requires (same uid, a dumpable target, an ancestor under Yama, the
    /// same or a nested Landlock domain), and the target's own filter refuses both
    /// calls again, so only the supervisor, the ancestor, holds this.
    pub fn allow_process_memory(mut self) -> Sandbox {
        self.process_memory = true;
        self
    }

    /// Leaves `fchmod`, `fchmodat`, `fchmodat2` and `utimensat` allowed, for `fdbroker
    /// run --transparent` alone: its program's notification filter sends every one of
    /// them to the supervisor, which makes the change itself (so its sandbox needs them
    /// too) and only on the program's own files in its scratch directory, never adding
    /// set-id or execute bits. Nothing else may use this: without that filter, a process
    /// could change the mode and times of every file it owns or may write.
    pub fn allow_metadata_calls(mut self) -> Sandbox {
        self.metadata = true;
        self
    }

    /// Becomes the sandbox's user now, for good, and sheds every capability (steps 1 and 3
    /// to 5 of the [module documentation](self)), without confining anything else yet.
    ///
    /// For a worker started as root: the broker judges a connection by the uid that
    /// makes it, so drop privileges, connect (the broker sees this user), then
    /// [`apply`](Sandbox::apply) the same sandbox, which finds the ids already changed
    /// and goes on with Landlock and seccomp. Connecting first would show the broker
    /// uid 0; applying first would leave no way to connect.
    ///
    /// ```no_run
    /// use fdbroker_worker::{Client, sandbox::Sandbox};
    /// let sandbox = Sandbox::new(); // nobody
    /// sandbox.drop_privileges()?;
    /// let broker = Client::connect("/run/fdbroker/fdbroker.sock")?;
    /// sandbox.apply()?;
    /// let file = broker.open("/var/spool/quarantine/sample.bin")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// Fails with [`SandboxError::Threads`] unless the process is single-threaded, before
    /// anything is changed. A later error may leave the ids changed: exit.
    pub fn drop_privileges(&self) -> Result<(), SandboxError> {
        threads::ensure_single()?;
        let ids = identity::resolve(&self.user, self.group.as_ref(), self.keep_groups)?;
        capabilities::drop_bounding_and_ambient(self.best_effort)?;
        identity::switch(ids)?;
        capabilities::clear_remaining()?;
        identity::verify(ids)?;
        capabilities::verify(self.best_effort)?;
        Ok(())
    }

    /// Applies the sandbox to the calling process; see the [module documentation](self) for
    /// the steps and their order.
    ///
    /// Open every connection the process will need first, the broker's included: afterwards
    /// it can make no socket but an `AF_UNIX` stream or seqpacket pair, and connect, bind or
    /// listen on none.
    ///
    /// Fails with [`SandboxError::Threads`] unless the process is single-threaded, before
    /// anything is changed.
    ///
    /// ```no_run
    /// let broker = fdbroker_worker::Client::from_env()?; // connections first
    /// let report = fdbroker_worker::sandbox::Sandbox::new().apply()?;
    /// eprintln!("{report}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply(&self) -> Result<Report, SandboxError> {
        threads::ensure_single()?;
        self.clone().prepare()?.apply()
    }

    /// Does every step that can be done ahead of time, without changing the process: resolves
    /// the ids, opens the allowlisted paths, builds the Landlock ruleset, compiles the seccomp
    /// filters.
    ///
    /// Meant for spawn mode: prepare in the parent (which may have threads), fork, and call
    /// [`PreparedSandbox::apply`] in the child before `execve`.
    ///
    /// ```no_run
    /// use std::os::unix::process::CommandExt;
    /// let prepared = fdbroker_worker::sandbox::Sandbox::new().prepare()?;
    /// let mut slot = Some(prepared);
    /// let mut cmd = std::process::Command::new("/usr/bin/worker");
    /// // SAFETY (of the example): the child only makes system calls before exec.
    /// unsafe {
    ///     cmd.pre_exec(move || match slot.take() {
    ///         Some(p) => p.apply().map(|_| ()).map_err(Into::into),
    ///         None => Err(std::io::Error::other("already applied")),
    ///     });
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prepare(self) -> Result<PreparedSandbox, SandboxError> {
        let ids = identity::resolve(&self.user, self.group.as_ref(), self.keep_groups)?;
        let ruleset = landlock::prepare(&self.allowed, self.best_effort)?;
        let filters = seccomp::compile(self.process_memory, self.metadata)?;
        Ok(PreparedSandbox {
            ids,
            ruleset,
            filters,
            best_effort: self.best_effort,
        })
    }
}

/// A sandbox with everything resolved and compiled, ready to apply. Holds the Landlock
/// ruleset descriptor (close-on-exec).
///
/// ```no_run
/// let prepared = fdbroker_worker::sandbox::Sandbox::new().prepare()?;
/// let (uid, gid) = prepared.ids();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a PreparedSandbox does nothing until apply() is called"]
pub struct PreparedSandbox {
    ids: Ids,
    ruleset: ::landlock::RulesetCreated,
    filters: seccomp::Filters,
    best_effort: bool,
}

impl fmt::Debug for PreparedSandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedSandbox")
            .field("uid", &self.ids.uid)
            .field("gid", &self.ids.gid)
            .field("best_effort", &self.best_effort)
            .finish_non_exhaustive()
    }
}

impl PreparedSandbox {
    /// The uid and gid the process will run as once applied (for a parent's records:
    /// a socketpair's `SO_PEERCRED` names the parent, not the confined child).
    ///
    /// ```no_run
    /// let prepared = fdbroker_worker::sandbox::Sandbox::new().prepare()?;
    /// assert_ne!(prepared.ids().0, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ids(&self) -> (u32, u32) {
        (self.ids.uid.as_raw(), self.ids.gid.as_raw())
    }

    /// A second, identical sandbox to apply: the same ids and filters, and a duplicate
    /// of the Landlock ruleset's descriptor (`dup`). For a parent that starts many
    /// processes under one prepared sandbox (`fdbroker each`) without preparing it
    /// again for each: applying the copy in one child leaves this one as it was.
    pub fn try_clone(&self) -> std::io::Result<PreparedSandbox> {
        Ok(PreparedSandbox {
            ids: self.ids,
            ruleset: self.ruleset.try_clone()?,
            filters: self.filters.clone(),
            best_effort: self.best_effort,
        })
    }

    /// Applies the sandbox to the calling process (steps 1 and 3 to 8 of the
    /// [module documentation](self)).
    ///
    /// Fails with [`SandboxError::Threads`] unless the process is single-threaded, before
    /// anything is changed. Any later error may leave the process partly confined: exit.
    ///
    /// ```no_run
    /// // In a child just forked, single-threaded:
    /// let prepared = fdbroker_worker::sandbox::Sandbox::new().prepare()?;
    /// let report = prepared.apply()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply(self) -> Result<Report, SandboxError> {
        threads::ensure_single()?;

        capabilities::drop_bounding_and_ambient(self.best_effort)?;
        identity::switch(self.ids)?;
        capabilities::clear_remaining()?;
        identity::verify(self.ids)?;
        let caps = capabilities::verify(self.best_effort)?;

        nix::sys::prctl::set_no_new_privs().map_err(SandboxError::NoNewPrivs)?;
        let no_new_privs = nix::sys::prctl::get_no_new_privs().map_err(SandboxError::NoNewPrivs)?;
        if !no_new_privs {
            return Err(SandboxError::NoNewPrivs(nix::Error::EPERM));
        }

        let landlock = landlock::enforce(self.ruleset, self.best_effort)?;
        seccomp::install(&self.filters)?;

        Ok(Report {
            uid: self.ids.uid.as_raw(),
            gid: self.ids.gid.as_raw(),
            capabilities_cleared: caps.sets_cleared,
            bounding_set_cleared: caps.bounding_cleared,
            no_new_privs,
            landlock,
            seccomp: true,
        })
    }
}

impl PreparedSandbox {
    /// Applies this sandbox's Landlock layer and seccomp filters to a process that
    /// already runs as this sandbox's user with no capability (checked, not assumed): a
    /// further, nested confinement on top of whatever confines it already.
    ///
    /// For `fdbroker run --transparent`, whose supervisor is confined first and forks
    /// the program, which then takes the ordinary worker sandbox on top: the program
    /// ends up exactly as confined as a plain `fdbroker run` worker, inside a Landlock
    /// domain nested in its supervisor's (which the kernel requires for the supervisor
    /// to read its memory).
    pub fn apply_nested(self) -> Result<Report, SandboxError> {
        threads::ensure_single()?;
        identity::verify(self.ids)?;
        let caps = capabilities::verify(self.best_effort)?;
        nix::sys::prctl::set_no_new_privs().map_err(SandboxError::NoNewPrivs)?;
        let landlock = landlock::enforce(self.ruleset, self.best_effort)?;
        seccomp::install(&self.filters)?;
        Ok(Report {
            uid: self.ids.uid.as_raw(),
            gid: self.ids.gid.as_raw(),
            capabilities_cleared: caps.sets_cleared,
            bounding_set_cleared: caps.bounding_cleared,
            no_new_privs: true,
            landlock,
            seccomp: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_defaults_and_settings() {
        let s = Sandbox::new();
        assert_eq!(s.user, Identity::Name("nobody".into()));
        assert_eq!(s.group, None);
        assert!(s.allowed.is_empty());
        assert!(!s.best_effort);

        let s = Sandbox::new()
            .user(4242)
            .group("nogroup")
            .allow_read("/etc")
            .allow_read_exec("/usr")
            .best_effort();
        assert_eq!(s.user, Identity::Id(4242));
        assert_eq!(s.group, Some(Identity::Name("nogroup".into())));
        assert_eq!(
            s.allowed,
            vec![
                Allowed {
                    path: "/etc".into(),
                    execute: false,
                    write: false,
                    symlinks: false,
                },
                Allowed {
                    path: "/usr".into(),
                    execute: true,
                    write: false,
                    symlinks: false,
                },
            ]
        );
        assert!(s.best_effort);
    }

    /// The test harness is multi-threaded, so apply must refuse, and refuse before changing
    /// anything (this test runs as whatever user runs the tests and must stay that user).
    #[test]
    fn apply_refuses_in_a_threaded_process_without_changing_anything() {
        let uid_before = nix::unistd::getuid();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let extra = std::thread::spawn(move || rx.recv().ok());
        let result = Sandbox::new().apply();
        drop(tx);
        extra.join().ok();
        assert!(
            matches!(result, Err(SandboxError::Threads(n)) if n >= 2),
            "{result:?}"
        );
        assert_eq!(nix::unistd::getuid(), uid_before);
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        assert!(status.contains("NoNewPrivs:\t0"), "{status}");
    }

    #[test]
    fn prepare_changes_nothing() {
        let uid_before = nix::unistd::getuid();
        match Sandbox::new().best_effort().prepare() {
            Ok(prepared) => {
                assert_eq!(prepared.ids.uid.as_raw(), 65534);
                drop(prepared);
            }
            // No user nobody in this environment.
            Err(SandboxError::UnknownUser(_)) => {}
            Err(e) => panic!("prepare failed: {e:?}"),
        }
        assert_eq!(nix::unistd::getuid(), uid_before);
    }
}
