//! The `fdbroker` command line.

use crate::log::{self, LogFormat};
use crate::server::listener::Listener;
use crate::server::state::Shared;
use crate::server::{ServeOptions, Server};
use clap::{Args, Parser, Subcommand};
use fdbroker_policy::{Access, Policy};
use fdbroker_worker::Client;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "fdbroker",
    version,
    about = "Open files by policy and hand their descriptors to sandboxed workers",
    long_about = "fdbroker is a privilege-separation broker. A privileged broker opens files \
on request and passes their descriptors over a Unix socket (SCM_RIGHTS) to unprivileged, \
sandboxed workers, deciding every request by a policy file the operator writes.",
    after_help = "Examples:\n  fdbroker serve --policy /etc/fdbroker/policy.toml\n  \
fdbroker cat --socket /run/fdbroker/fdbroker.sock /var/spool/quarantine/sample.bin\n  \
fdbroker policy check /etc/fdbroker/policy.toml\n  \
fdbroker policy explain /etc/fdbroker/policy.toml --uid scanner /var/spool/quarantine/a.bin"
)]
/// The `fdbroker` command line: `fdbroker(8)` is rendered from this definition
/// (`clap_mangen`), so `--help` and the manual page come from one source.
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker: listen on the policy's socket and serve workers.
    #[command(
        after_help = "Example:\n  fdbroker serve --policy /etc/fdbroker/policy.toml --socket /run/fdbroker/fdbroker.sock\n\n\
Processes: this process is a small monitor that starts a confined server (this binary \
again) and, on reload, a new one that takes over every connection.\n\
Signals: SIGHUP reloads the policy (`fdbroker reload PID` does and waits for the outcome; \
an invalid file is rejected and the old policy stays); SIGTERM or SIGINT stop gracefully.\n\
systemd: sockets passed by socket activation (LISTEN_FDS) are served instead of --socket; \
READY, RELOADING, STOPPING, STATUS and WATCHDOG go to NOTIFY_SOCKET; log lines carry \
syslog priorities when JOURNAL_STREAM is stderr.\n\
Log level: FDBROKER_LOG=debug (or e.g. fdbroker::audit=off)."
    )]
    Serve(ServeArgs),
    /// Fetch files through a broker and write their contents to stdout.
    #[command(
        after_help = "Example:\n  fdbroker cat --socket /run/fdbroker/fdbroker.sock /srv/secret/report.txt\n\n\
Without --socket: the inherited FDBROKER_FD, else FDBROKER_SOCKET, else /run/fdbroker/fdbroker.sock; \
FDBROKER_TIMEOUT=SECONDS bounds the wait for the broker.\n\
Exits 1 if any file could not be fetched, printing `fdbroker: PATH: reason` for each."
    )]
    Cat(CatArgs),
    /// Check or explain a policy file.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run COMMAND confined, as the policy's client, with this broker its only way to files.
    #[command(
        after_help = "Example:\n  fdbroker run --policy scanner.toml -- scanner < files.txt > report.txt\n\n\
The worker runs as the [sandbox] user (default nobody) with no capabilities, no_new_privs, \
Landlock (only the [sandbox] read_only paths, read and execute) and seccomp, in a session of \
its own (no controlling terminal); it finds its broker connection in FDBROKER_FD, which every \
process of its tree may share (each library client asks the broker for a connection of its \
own through it, so `sh -c 'fdbroker cat A; fdbroker cat B'` works). It can make \
no socket but a Unix socketpair, connect or bind none, and execute nothing but files beneath \
read_only (no memfd, no fexecve): pass it any other connection it needs as stdio. The broker \
then confines itself as `serve` does. Signals sent to fdbroker run (HUP, INT, QUIT, TERM, USR1, USR2) \
are forwarded to it. The worker runs in a PID namespace of its own: when it exits, or the broker \
dies, everything it started is killed. Exit status: the worker's, \
128+N if killed by signal N, 126 if it cannot be started, 127 if not found.\n\n--transparent runs an unmodified program (cat, sha256sum, python3, a shell): its open, stat and access calls on paths the policy covers are answered by the broker through seccomp user notification (Linux 6.9 or later); a policy denial is EACCES, other paths are left to the sandbox. See the README's \"Transparent mode\"."
    )]
    Run(RunArgs),
    /// Ask a running broker to reload its policy, and wait for the outcome.
    #[command(
        after_help = "Example (systemd's ExecReload=):\n  fdbroker reload --policy /etc/fdbroker/policy.toml $MAINPID\n\n\
With --policy the file is checked first, and a broken one is reported with FILE:LINE:COL \
without disturbing the broker. Then PID (the `fdbroker serve` process) starts a new server \
on the file; the command waits until it serves every connection (exit 0) or was refused \
(exit 1: the previous policy stays in force, and the broker's log says why)."
    )]
    Reload(ReloadArgs),
}

#[derive(Args, Debug)]
struct ReloadArgs {
    /// Check this policy file before asking (the one the broker was started with).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// How long to wait for the outcome, in seconds.
    #[arg(long, default_value_t = 90, value_name = "SECS")]
    timeout: u64,
    /// The process id of `fdbroker serve` (systemd: $MAINPID).
    #[arg(value_name = "PID")]
    pid: i32,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The policy file.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The policy client the worker is served as (default: the policy's only client).
    #[arg(long, value_name = "NAME")]
    client: Option<String>,
    /// Run the worker as this user (name or uid) instead of the policy's [sandbox] user.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Serve an unmodified program's own open/stat/access calls through the broker.
    #[arg(long)]
    transparent: bool,
    /// The worker command and its arguments.
    #[arg(required = true, last = true, value_name = "COMMAND")]
    command: Vec<std::ffi::OsString>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// The policy file.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Listen here instead of the policy's [broker] socket.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Event-loop threads (default: one per CPU, at least 2).
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Validate the policy and exit (for ExecStartPre=).
    #[arg(long)]
    check: bool,
}

#[derive(Args, Debug)]
struct CatArgs {
    /// The broker's socket.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Files to fetch, by absolute path.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Exit 0 if the policy is valid; else print FILE:LINE:COL: message and exit 1.
    /// Also checks it against this machine's filesystem, as warnings.
    #[command(
        after_help = "Example:\n  fdbroker policy check /etc/fdbroker/policy.toml\n\n\
Warnings (FILE:LINE:COL: warning: ...; exit 0, or 1 with --strict): roots that do not \
exist or that the broker would refuse to open (a directory above them that someone \
other than root could change), deny rules that match nothing on disk or lie outside \
every allow rule, and rules written twice."
    )]
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Treat warnings as errors (exit 1).
        #[arg(long)]
        strict: bool,
    },
    /// Show the decision for one request and the rule that made it.
    #[command(
        after_help = "Example:\n  fdbroker policy explain policy.toml --uid 1001 --access read /var/spool/quarantine/a.bin\n\n\
Exits 0 if the request would be granted, 1 if denied, 2 on errors."
    )]
    Explain {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The peer's uid (number or user name).
        #[arg(long)]
        uid: String,
        /// The peer's gid (number or group name; default: the user's primary group).
        #[arg(long)]
        gid: Option<String>,
        /// read, write, read-write, create or directory.
        #[arg(long, default_value = "read")]
        access: Access,
        /// The requested path.
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
}

/// Run the command line; the binary's `main` is only this.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Cat(args) => cat(args),
        Command::Policy(PolicyCommand::Check { file, strict }) => check(&file, strict),
        Command::Policy(PolicyCommand::Explain {
            file,
            uid,
            gid,
            access,
            path,
        }) => explain(&file, &uid, gid.as_deref(), access, &path),
        Command::Run(args) => spawn(args),
        Command::Reload(args) => reload(args),
    }
}

fn reload(args: ReloadArgs) -> ExitCode {
    if let Some(policy) = &args.policy
        && let Err(e) = Policy::load(policy)
    {
        return fail(format!("not reloading: {e}"));
    }
    if args.pid <= 0 {
        return fail(format!("{} is not a process id", args.pid));
    }
    let pid = nix::unistd::Pid::from_raw(args.pid);
    match crate::daemon::monitor::request_reload(pid, std::time::Duration::from_secs(args.timeout))
    {
        Ok(true) => {
            println!("fdbroker: reloaded; the new policy is in force");
            ExitCode::SUCCESS
        }
        Ok(false) => fail(
            "the broker refused the new policy; the previous policy stays in force \
             (the broker's log says why: journalctl -u fdbroker)",
        ),
        Err(e) => fail(format!("cannot reload process {}: {e}", args.pid)),
    }
}

fn spawn(args: RunArgs) -> ExitCode {
    log::init(LogFormat::Text);
    let spec = crate::spawn::broker::Spawn {
        policy: args.policy,
        client: args.client,
        user: args.user,
        transparent: args.transparent,
        command: args.command,
    };
    match crate::spawn::broker::spawn_main(spec) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fdbroker: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("fdbroker: {msg}");
    ExitCode::FAILURE
}

fn serve(args: ServeArgs) -> ExitCode {
    // A failure to start is one line, marked as an error for the journal.
    fn fail(msg: impl std::fmt::Display) -> ExitCode {
        eprintln!("{}", log::fatal_line(&msg));
        ExitCode::FAILURE
    }
    // First, before anything can go wrong or take time: a SIGHUP or SIGTERM sent during
    // start-up waits for the event loop instead of killing the broker.
    if let Err(e) = crate::server::block_control_signals() {
        return fail(format!("cannot block signals: {e}"));
    }
    if args.check {
        return match Policy::load(&args.policy) {
            Ok(_) => {
                println!("{}: ok", args.policy.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    // Started by the monitor: this process is a server. Otherwise it is the monitor,
    // which starts servers (this binary again, with these arguments).
    match std::env::var(crate::server::control::ENV_CONTROL_FD) {
        Ok(fd) => serve_as_server(args, &fd),
        Err(_) => {
            log::init(args.log_format);
            crate::daemon::monitor::run(std::env::args_os().collect())
        }
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

fn serve_as_server(args: ServeArgs, control_fd: &str) -> ExitCode {
    use crate::server::control::{self, Up};
    // Started as /proc/self/exe (the monitor's own binary, even if replaced on disk
    // since): named as the broker, not "exe", in ps and /proc.
    let _ = nix::sys::prctl::set_name(c"fdbroker");
    let control = match inherited(control_fd)
        .and_then(|fd| fdbroker_shared::Channel::from_fd(fd).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}", log::fatal_line(&format!("control channel: {e}")));
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
            eprintln!("{}", log::fatal_line(&reason));
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
    log::init(args.log_format);
    match crate::confine::rlimit::raise_nofile() {
        Ok(n) => tracing::debug!(nofile = n, "descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the descriptor limit"),
    }
    let settings = policy.broker();
    let (listeners, own_socket, socket_names) = match std::env::var(control::ENV_LISTEN_FDS) {
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
            // The socket file the first server created: whoever stops last removes it.
            let mut own = None;
            if let (Ok(identity), Some(first)) = (
                std::env::var(control::ENV_SOCKET_FILE),
                listeners.first_mut(),
            ) {
                first.adopt_file(&identity);
                own = first.path().map(Path::to_path_buf);
            }
            (listeners, own, names.join(", "))
        }
        Err(_) => {
            let socket = args
                .socket
                .clone()
                .or_else(|| settings.socket.clone())
                .unwrap_or_else(|| PathBuf::from(fdbroker_worker::DEFAULT_SOCKET));
            let listener =
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
            (
                vec![listener],
                Some(socket.clone()),
                socket.display().to_string(),
            )
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
        match crate::confine::confine(
            &shared.current(),
            Some(&policy_path),
            own_socket.as_deref(),
            None,
        ) {
            Ok(c) => {
                tracing::info!("confined: {c}");
                shared.set_confinement(c);
            }
            Err(e) => {
                return fail(&format!(
                    "cannot confine the broker: {e} (set [broker] confine = false to run unconfined)"
                ));
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

fn cat(args: CatArgs) -> ExitCode {
    let client = match &args.socket {
        Some(s) => Client::connect(s),
        None => Client::from_env(),
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut stdout = std::io::stdout().lock();
    let mut ok = true;
    for path in &args.files {
        let result = client
            .open(path)
            .and_then(|mut f| std::io::copy(&mut f, &mut stdout).map(|_| ()));
        if let Err(e) = result {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return ExitCode::FAILURE;
            }
            let _ = stdout.flush();
            eprintln!("fdbroker: {}: {e}", path.display());
            ok = false;
        }
    }
    if let Err(e) = stdout.flush() {
        return fail(format!("stdout: {e}"));
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn check(file: &Path, strict: bool) -> ExitCode {
    let p = match Policy::load(file) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let warnings = crate::lint::check(&p);
    for w in &warnings {
        eprintln!("{w}");
    }
    let noun = if warnings.len() == 1 {
        "warning"
    } else {
        "warnings"
    };
    if strict && !warnings.is_empty() {
        eprintln!(
            "fdbroker: {}: {} {noun} (--strict)",
            file.display(),
            warnings.len()
        );
        return ExitCode::FAILURE;
    }
    println!(
        "{}: ok ({} clients, {} roots, {} {noun})",
        file.display(),
        p.clients().len(),
        p.roots().len(),
        warnings.len()
    );
    ExitCode::SUCCESS
}

fn explain(file: &Path, uid: &str, gid: Option<&str>, access: Access, path: &Path) -> ExitCode {
    use std::os::unix::ffi::OsStrExt;
    let policy = match Policy::load(file) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let (uid, primary) = match resolve_user(uid) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("fdbroker: {e}");
            return ExitCode::from(2);
        }
    };
    let gid = match gid.map(resolve_group).transpose() {
        Ok(g) => g.or(primary).unwrap_or(uid),
        Err(e) => {
            eprintln!("fdbroker: {e}");
            return ExitCode::from(2);
        }
    };
    let explanation = policy.explain(uid, gid, path.as_os_str().as_bytes(), access);
    println!("{explanation}");
    let granted = policy.client_for(uid, gid).is_some_and(|c| {
        matches!(
            policy.decide(c, path.as_os_str().as_bytes(), access),
            fdbroker_policy::Decision::Allow(_)
        )
    });
    if granted {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A uid by number or name, with the user's primary gid when known.
fn resolve_user(s: &str) -> Result<(u32, Option<u32>), String> {
    use nix::unistd::{Uid, User};
    match s.parse::<u32>() {
        Ok(n) => {
            let primary = User::from_uid(Uid::from_raw(n))
                .ok()
                .flatten()
                .map(|u| u.gid.as_raw());
            Ok((n, primary))
        }
        Err(_) => match User::from_name(s) {
            Ok(Some(u)) => Ok((u.uid.as_raw(), Some(u.gid.as_raw()))),
            _ => Err(format!("no such user: {s}")),
        },
    }
}

fn resolve_group(s: &str) -> Result<u32, String> {
    use nix::unistd::Group;
    match s.parse::<u32>() {
        Ok(n) => Ok(n),
        Err(_) => match Group::from_name(s) {
            Ok(Some(g)) => Ok(g.gid.as_raw()),
            _ => Err(format!("no such group: {s}")),
        },
    }
}
