//! Running as an unprivileged user: `nobody`, looked up in the user database (its uid
//! differs between systems), with no supplementary groups.

use crate::bins::fdbroker_bin;
use crate::process::run_with_timeout;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

/// `nobody`'s uid and primary gid, from `getpwnam("nobody")`.
fn ids() -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *IDS.get_or_init(|| {
        let user = nix::unistd::User::from_name("nobody")
            .expect("read the user database")
            .expect("the tests need a user named nobody");
        (user.uid.as_raw(), user.gid.as_raw())
    })
}

/// The uid of `nobody`.
pub fn nobody_uid() -> u32 {
    ids().0
}

/// The primary gid of `nobody` (`nogroup` on Debian).
pub fn nobody_gid() -> u32 {
    ids().1
}

/// Run `cmd` as nobody:nogroup with no supplementary groups, with a time limit.
pub fn run_as_nobody(cmd: &mut Command) -> Output {
    // std calls setgroups(0) itself when a root parent sets the child's uid.
    cmd.uid(nobody_uid()).gid(nobody_gid());
    run_with_timeout(cmd, Duration::from_secs(30))
}

/// `fdbroker cat --socket S FILES...` as nobody.
pub fn cat_as_nobody(socket: &Path, files: &[&Path]) -> Output {
    let mut cmd = Command::new(fdbroker_bin());
    cmd.arg("cat").arg("--socket").arg(socket).args(files);
    run_as_nobody(&mut cmd)
}
