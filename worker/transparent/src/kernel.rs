//! The kernel transparent mode needs, checked before anything is started.

/// Why transparent mode cannot run on this kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The kernel's release could not be read.
    #[error("uname: {0}")]
    Uname(#[source] std::io::Error),
    /// The kernel is older than the features the supervisor relies on.
    #[error(
        "--transparent needs Linux 6.9 or later (seccomp's WAIT_KILLABLE_RECV, 5.19, and \
         thread pidfds, 6.9); this kernel is {release}"
    )]
    TooOld { release: String },
}

/// Refuses to start on a kernel older than 5.19 (`SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`)
/// or, for threads, 6.9 (`PIDFD_THREAD`).
pub fn check_kernel() -> Result<(), KernelError> {
    let uts = nix::sys::utsname::uname().map_err(|e| KernelError::Uname(e.into()))?;
    let release = uts.release().to_string_lossy().into_owned();
    if version(&release) < (6, 9) {
        return Err(KernelError::TooOld { release });
    }
    Ok(())
}

/// The major and minor version a kernel release string starts with (0 where missing).
fn version(release: &str) -> (u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_read_as_the_kernel_writes_them() {
        assert_eq!(version("6.9.0"), (6, 9));
        assert_eq!(version("6.12.38+deb13-amd64"), (6, 12));
        assert_eq!(version("5.19"), (5, 19));
        assert_eq!(version("garbage"), (0, 0));
        assert!(version("6.8.12-generic") < (6, 9));
    }

    #[test]
    fn the_refusal_keeps_its_words() {
        let e = KernelError::TooOld {
            release: "5.15.0".into(),
        };
        assert_eq!(
            e.to_string(),
            "--transparent needs Linux 6.9 or later (seccomp's WAIT_KILLABLE_RECV, 5.19, and \
             thread pidfds, 6.9); this kernel is 5.15.0"
        );
        let e = KernelError::Uname(std::io::Error::from_raw_os_error(libc::EFAULT));
        assert!(std::error::Error::source(&e).is_some());
    }
}
