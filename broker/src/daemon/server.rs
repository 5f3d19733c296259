//! A server: the process of `fdbroker serve` that serves workers. Run by the monitor
//! (`execve` of its own binary, [`crate::daemon::monitor`]) as root, it confines itself
//! (Landlock to the policy's roots, seccomp, only the capabilities it needs) once
//! everything it opens by name at start-up is open, before any thread starts.

use crate::listener::Listener;
use crate::log::{self, LogFormat};
use crate::server::control::{self, Up};
use crate::server::state::Shared;
use crate::server::{ServeOptions, Server};
use fdbroker_policy::Policy;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// What `fdbroker serve` was asked for, as a server needs it.
#[derive(Debug, Clone)]
pub struct Serve {
    /// The policy file.
    pub policy: PathBuf,
    /// Listen here instead of the policy's `[broker] socket`.
    pub socket: Option<PathBuf>,
    /// Event-loop threads (0: one per CPU, at least 2).
    pub threads: usize,
    /// Log line format.
    pub log_format: LogFormat,
}

/// The server process: adopt what the monitor passed, load the policy, bind or adopt
/// the listeners, take over from a predecessor, confine, and serve until stopped.
///
/// `control_fd` is the number of the control channel to the monitor
/// ([`control::ENV_CONTROL_FD`]). Every failure goes up that channel, so the monitor logs
/// it once.
pub fn server_main(args: Serve, control_fd: &str) -> ExitCode {
    // Started as /proc/self/exe (the monitor's own binary, even if replaced on disk
    // since): named as the broker, not "exe", in ps and /proc.
    let _ = nix::sys::prctl::set_name(c"fdbroker");
    let control = match inherited(control_fd)
        .and_then(|fd| fdbroker_shared::Channel::from_fd(fd).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            log::fatal(&format!("control channel: {e}"));
            return ExitCode::FAILURE;
        }
    };
    // Failures go to the monitor, which logs them once (at start-up as a failed start,
    // on reload as a refused reload).
    let fail = |msg: &dyn std::fmt::Display| {
        let reason = msg.to_string();
        if control::send_up(
            &control,
            &Up::Failed {
                reason: reason.clone(),
            },
            None,
        )
        .is_err()
        {
            log::fatal(&reason);
        }
        ExitCode::FAILURE
    };
    // Absolute, so the policy's directory is what Landlock keeps readable, whatever
    // the working directory.
    let policy_path = match std::path::absolute(&args.policy) {
        Ok(p) => p,
        Err(e) => return fail(&format!("{}: {e}", args.policy.display())),
    };
    let policy = match Policy::load(&policy_path) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    crate::audit::init_logging(args.log_format);
    match crate::confine::rlimit::raise_nofile() {
        Ok(n) => tracing::debug!(nofile = n, "descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the descriptor limit"),
    }
    let settings = policy.broker();
    let (listeners, socket_names) = match std::env::var(control::ENV_LISTEN_FDS) {
        Ok(list) => {
            let mut listeners = Vec::new();
            let mut names = Vec::new();
            for entry in list.split(',') {
                let (number, name) = entry.split_once(':').unwrap_or((entry, "inherited"));
                match inherited(number)
                    .and_then(|fd| Listener::from_fd(fd).map_err(|e| e.to_string()))
                {
                    Ok(l) => listeners.push(l),
                    Err(e) => return fail(&format!("listener from the monitor: {e}")),
                }
                names.push(name.to_owned());
            }
            // The socket file is the monitor's (it removes it when it stops for good):
            // a server that dies or hands over leaves it to the one that serves next.
            (listeners, names.join(", "))
        }
        Err(_) => {
            let socket = args
                .socket
                .clone()
                .or_else(|| settings.socket.clone())
                .unwrap_or_else(|| PathBuf::from(fdbroker_worker::DEFAULT_SOCKET));
            let mut listener =
                match Listener::bind(&socket, settings.socket_mode, settings.socket_group) {
                    Ok(l) => l,
                    Err(e) => return fail(&e),
                };
            // The monitor keeps it for the servers after this one.
            let shared_fd = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned();
            let sent = shared_fd.and_then(|fd| {
                let file = listener.file_identity().unwrap_or_default();
                control::send_up(&control, &Up::Bound { socket_file: file }, Some(&fd))
            });
            if let Err(e) = sent {
                return fail(&format!("cannot give the listener to the monitor: {e}"));
            }
            // The monitor owns the socket file now: this server never removes it (a
            // successor, or the replacement of this one if it dies, listens there).
            listener.keep_file();
            (vec![listener], socket.display().to_string())
        }
    };
    let shared = Arc::new(Shared::new(policy, Some(policy_path.clone())));
    let opts = ServeOptions {
        threads: args.threads,
        handle_signals: true,
    };
    let server = match Server::with_listeners(Arc::clone(&shared), listeners, &opts) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let watchdog = std::env::var(control::ENV_WATCHDOG_USEC)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v > 0)
        .map(std::time::Duration::from_micros);
    let reporting = std::os::fd::AsFd::as_fd(&control)
        .try_clone_to_owned()
        .and_then(|fd| server.report_to_monitor(fdbroker_shared::Channel::wrap(fd), watchdog));
    if let Err(e) = reporting {
        return fail(&format!("cannot report to the monitor: {e}"));
    }
    if let Ok(number) = std::env::var(control::ENV_HANDOVER_FD) {
        let from = inherited(&number)
            .and_then(|fd| fdbroker_shared::Channel::from_fd(fd).map_err(|e| e.to_string()))
            .and_then(|ch| {
                let predecessor = std::env::var(control::ENV_PREDECESSOR_PID)
                    .ok()
                    .and_then(|p| p.parse().ok());
                server
                    .receive_handover(ch, predecessor)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = from {
            return fail(&format!("handover socket: {e}"));
        }
    }
    // Everything the server opens by name at start-up is open now, and no thread has
    // started: the moment to give up what serving does not need.
    if shared.current().policy.broker().confine {
        let loaded = shared.current();
        match crate::confine::confine(
            &loaded.policy,
            &loaded.roots,
            Some(&policy_path),
            // The socket file is the monitor's to remove, not this server's.
            None,
            None,
        ) {
            Ok(c) => {
                tracing::info!("confined: {c}");
                shared.set_confinement(c);
            }
            Err(e) => {
                return fail(&format!("cannot confine the broker: {e}"));
            }
        }
    } else {
        tracing::warn!(
            "RUNNING UNCONFINED: [broker] confine = false keeps every capability and no \
             Landlock or seccomp; use it only for debugging"
        );
    }
    tracing::info!(
        socket = %socket_names,
        policy = %policy_path.display(),
        clients = shared.current().policy.clients().len(),
        "serving"
    );
    match server.run() {
        Ok(()) => {
            tracing::info!(
                requests = shared
                    .stats
                    .requests
                    .load(std::sync::atomic::Ordering::Relaxed),
                "stopped"
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// Adopt a descriptor number the monitor passed in the environment.
fn inherited(number: &str) -> Result<std::os::fd::OwnedFd, String> {
    let fd: i32 = number
        .parse()
        .ok()
        .filter(|fd| *fd > 2)
        .ok_or_else(|| format!("{number:?} is not a descriptor number the monitor passes"))?;
    crate::sys::adopt_inherited(fd).map_err(|e| format!("descriptor {fd}: {e}"))
}
