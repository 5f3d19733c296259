//! The `fdbroker` command line: the clap definitions (the one source of `--help` and of
//! `fdbroker(8)`) and the dispatch to each command's `*_main`. Nothing else lives here.

use crate::log::{self, LogFormat};
use clap::{Args, Parser, Subcommand};
use fdbroker_policy::{Access, Policy};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "fdbroker",
    version,
    long_version = crate::doctor::LONG_VERSION,
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
again) and, on reload, a new one that takes over every connection. A server that dies is \
replaced while the socket stays open; after 5 servers in a row die within 10 s of their start, \
the monitor exits 1.\n\
Signals: SIGHUP reloads the policy (`fdbroker reload PID` does and waits for the outcome; \
an invalid file is rejected and the old policy stays); SIGTERM or SIGINT stop gracefully.\n\
systemd: sockets passed by socket activation (LISTEN_FDS) are served instead of --socket; \
READY, RELOADING, STOPPING, STATUS and WATCHDOG go to NOTIFY_SOCKET; log lines carry \
syslog priorities when JOURNAL_STREAM is stderr, and each decision is then a native journal \
entry with FDBROKER_RESULT, FDBROKER_CLIENT, FDBROKER_PATH, FDBROKER_RULE, FDBROKER_UID \
and FDBROKER_PID fields (journalctl FDBROKER_RESULT=denied).\n\
Log level: FDBROKER_LOG=debug (or e.g. fdbroker::audit=off)."
    )]
    Serve(ServeArgs),
    /// Fetch files through a broker and write their contents to stdout.
    #[command(
        after_help = "Example:\n  fdbroker cat --socket /run/fdbroker/fdbroker.sock /srv/secret/report.txt\n\n\
Without --socket: the inherited FDBROKER_FD, else FDBROKER_SOCKET, else /run/fdbroker/fdbroker.sock. \
FDBROKER_TIMEOUT=SECONDS bounds every wait for the broker, connecting included, with or without --socket.\n\
Exits 1 if any file could not be fetched, printing `fdbroker: PATH: reason` for each."
    )]
    Cat(CatArgs),
    /// Write standard input to a file through a broker (a create or write grant).
    #[command(
        after_help = "Example:\n  echo clean | fdbroker put --socket /run/fdbroker/fdbroker.sock /srv/out/report.txt\n\n\
Creates FILE where the policy grants create, else truncates and rewrites an existing \
FILE where it grants write. Connects as `fdbroker cat` does. \
Exits 1 if the file could not be opened or written, printing `fdbroker: FILE: reason`."
    )]
    Put(PutArgs),
    /// List directories through a broker (a directory grant), one name a line.
    #[command(
        after_help = "Example:\n  fdbroker ls --socket /run/fdbroker/fdbroker.sock /var/spool/quarantine\n\n\
The broker lists the directory itself: names the policy hides are left out, as a worker \
would see it. Directories end in `/`. Connects as `fdbroker cat` does. \
Exits 1 if any directory could not be listed, printing `fdbroker: DIR: reason` for each."
    )]
    Ls(LsArgs),
    /// Check or explain a policy file.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run COMMAND confined, as the policy's client, with this broker its only way to files.
    #[command(
        after_help = "Example:\n  fdbroker run --policy scanner.toml -- scanner < files.txt > report.txt\n\n\
The worker runs as the [sandbox] user (default dynamic: a transient uid and gid from \
[sandbox] uid_range that no other process holds, for this run alone, so that nothing outside \
the sandbox can take its descriptors, memory or broker connection) with no capabilities, no_new_privs, \
Landlock (only the [sandbox] read_only paths, read and execute) and seccomp, in a session of \
its own (no controlling terminal); it finds its broker connection in FDBROKER_FD, which every \
process of its tree may share (each library client asks the broker for a connection of its \
own through it, so `sh -c 'fdbroker cat A; fdbroker cat B'` works). It can make \
no socket but a Unix socketpair, connect or bind none, and execute nothing but files beneath \
read_only (no memfd, no fexecve): pass it any other connection it needs as stdio. The broker \
then confines itself as `serve` does. Signals sent to fdbroker run (HUP, INT, QUIT, TERM, USR1, USR2) \
are forwarded to it. The worker runs in a PID namespace of its own: when it exits, or the broker \
dies, everything it started is killed. Exit status: the worker's, \
128+N if killed by signal N, 126 if it cannot be started, 127 if not found; when a limit \
(--time-limit, ..., also [sandbox] time_limit, ...) ends the run, one `fdbroker: verdict: ...` line \
on stderr and 124 timeout, 123 cpu, 122 memory, 121 pids, 120 file-size, 119 output (docs/spawn.md#limits). \
At exit it prints how many requests the policy refused, with the first few paths; with --fail-on-denial \
(or [sandbox] fail_on_denial = true) a worker's exit status 0 becomes 1 when any was.\n\n--transparent runs an unmodified program (cat, sha256sum, python3, a shell): its open, stat and access calls on paths the policy covers are answered by the broker through seccomp user notification (Linux 6.9 or later); a policy denial is EACCES, other paths are left to the sandbox. See docs/transparent.md."
    )]
    Run(RunArgs),
    /// Run COMMAND once per path read on stdin, each time in a fresh sandbox whose stdin
    /// is that file and which holds nothing else.
    #[command(
        after_help = "Example:\n  find /srv/quarantine -type f | fdbroker each --policy scan.toml -j 4 --time-limit 30s -- sha256sum\n\n\
Paths come one per line on stdin (NUL-separated with -0; empty ones are skipped). Each is \
decided and opened under the policy as a read request of its client; then COMMAND starts in \
the sandbox of `fdbroker run` (a transient uid of its own among the items running at once, \
Landlock, seccomp, its own PID namespace, the limits) with that file as its stdin, \
FDBROKER_ITEM set to the path, and no broker connection and no other descriptor.\n\n\
Output: one JSON line per path, in input order: {\"index\", \"path\", \"verdict\", \"exit_status\", \
\"signal\", \"wall_ms\", \"cpu_ms\", \"max_rss_kib\", \"stdout\"} (plus \"message\" for denied and \
error, \"stdout_file\" with --stdout-dir, \"path_hex\" for a path that is not UTF-8). verdict: ok \
(exit 0), exit (other status), timeout, cpu, memory, pids, file-size, output (a limit ended \
it), signal, denied (the policy refused the path), error (not opened or not started). stdout \
is kept up to --output-limit (default 1M). The worker's stderr is passed on, each line \
prefixed with [INDEX].\n\n\
Exit status: 0 when every item is ok, 1 otherwise, 2 on usage errors, 128+N when signal N \
(SIGTERM, SIGINT, SIGHUP) ended it (the running items are killed, the cgroups removed)."
    )]
    Each(EachArgs),
    /// Show what a running broker serves, to whom, and what it decided.
    #[command(
        after_help = "Examples:\n  fdbroker status $(systemctl show -p MainPID --value fdbroker)\n  \
fdbroker status --socket /run/fdbroker/fdbroker.sock --json\n\n\
Only root or the broker's own user may ask (the broker checks the caller's uid). Shows the \
policy file and when it was loaded, the last reload and its outcome, the open connections \
with their peers (client, uid, gid, pid), requests, grants, denials and failures per client \
and per rule since the service started (kept across reloads; each path of a batch, each \
stat and listing is one request), descriptors passed and not yet received per uid, and the \
uptime. The socket: --socket, else the one process PID (`fdbroker serve`) listens on, else \
FDBROKER_SOCKET, else /run/fdbroker/fdbroker.sock. Exits 1 if there is no answer."
    )]
    Status(StatusArgs),
    /// Ask a running broker to reload its policy, and wait for the outcome.
    #[command(
        after_help = "Example (systemd's ExecReload=):\n  fdbroker reload --policy /etc/fdbroker/policy.toml $MAINPID\n\n\
With --policy the file is checked first, and a broken one is reported with FILE:LINE:COL \
without disturbing the broker. Then PID (the `fdbroker serve` process) starts a new server \
on the file; the command waits until it serves every connection (exit 0) or was refused \
(exit 1: the previous policy stays in force, and the broker's log says why).\n\n\
--replay LOG (`-` reads stdin) first re-decides every request of that audit log under \
the --policy file (default: the one PID was started with) and refuses the reload (exit 1, each flip listed) if one the log \
recorded as granted would now be denied; --force reloads anyway. systemd:\n  \
ExecReload=/bin/sh -c 'journalctl -q -o cat -u fdbroker.service --since=-7d | \
fdbroker reload --policy /etc/fdbroker/policy.toml --replay - $MAINPID'"
    )]
    Reload(ReloadArgs),
    /// Print a shell completion script for fdbroker to stdout.
    #[command(
        after_help = "Examples:\n  fdbroker completions bash > /usr/share/bash-completion/completions/fdbroker\n  \
fdbroker completions zsh > /usr/share/zsh/vendor-completions/_fdbroker\n  \
fdbroker completions fish > /usr/share/fish/vendor_completions.d/fdbroker.fish\n\n\
The Debian package installs all three."
    )]
    Completions {
        /// The shell to complete for.
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the version and commit; with --check, what this kernel offers fdbroker.
    #[command(
        visible_alias = "doctor",
        after_help = "Example:\n  fdbroker version --check\n\n\
--check probes openat2, the Landlock ABI, seccomp filters, seccomp user notification \
(and the Linux 6.9 that --transparent needs) and cgroup v2, and says for each feature the \
kernel lacks what fdbroker does without it. Exits 1 if the broker could not serve at all \
here (no openat2), else 0."
    )]
    Version {
        /// Probe the running kernel's features.
        #[arg(long)]
        check: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// The broker's socket.
    #[arg(long, value_name = "PATH", conflicts_with = "pid")]
    socket: Option<PathBuf>,
    /// Print the report as JSON (one object).
    #[arg(long)]
    json: bool,
    /// The process id of `fdbroker serve` (systemd: MainPID).
    #[arg(value_name = "PID")]
    pid: Option<i32>,
}

#[derive(Args, Debug)]
struct ReloadArgs {
    /// Check this policy file before asking (the one the broker was started with).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Refuse the reload if the policy (--policy, else the file PID was started with)
    /// would deny a request this audit log (`-`: stdin) recorded as granted.
    #[arg(long, value_name = "LOG")]
    replay: Option<PathBuf>,
    /// With --replay: reload even so.
    #[arg(long, requires = "replay")]
    force: bool,
    /// How long to wait for the outcome, in seconds.
    #[arg(long, default_value_t = 90, value_name = "SECS")]
    timeout: u64,
    /// The process id of `fdbroker serve` (systemd: $MAINPID).
    #[arg(value_name = "PID")]
    pid: i32,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The policy file (with --learn: the base to learn from; default: a blank one).
    #[arg(long, value_name = "FILE", required_unless_present = "learn")]
    policy: Option<PathBuf>,
    /// Learn mode: grant what no rule grants beneath the --learn-scope directories,
    /// then write the narrowest policy that grants what the worker used to OUT.
    #[arg(long, value_name = "OUT.toml", requires = "learn_scope")]
    learn: Option<PathBuf>,
    /// A directory learn mode may grant beneath (repeatable; required with --learn).
    #[arg(long, value_name = "DIR", requires = "learn")]
    learn_scope: Vec<PathBuf>,
    /// Fold more than N sibling files needing the same access into one `DIR/*` rule
    /// (0: never).
    #[arg(long, value_name = "N", default_value_t = 8, requires = "learn")]
    learn_collapse: usize,
    /// The policy client the worker is served as (default: the policy's only client).
    #[arg(long, value_name = "NAME")]
    client: Option<String>,
    /// Run the worker as this user (name, uid, or `dynamic` for a transient uid) instead
    /// of the policy's [sandbox] user.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Serve an unmodified program's own open/stat/access calls through the broker.
    #[arg(long)]
    transparent: bool,
    /// Exit non-zero (1, or the program's own non-zero status) when the policy refused
    /// any request; also `[sandbox] fail_on_denial = true`.
    #[arg(long)]
    fail_on_denial: bool,
    #[command(flatten)]
    limits: crate::each::cli::LimitArgs,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Append the broker's log and audit lines to this file (created mode 0600)
    /// instead of standard error, which the worker keeps to itself.
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// The worker command and its arguments.
    #[arg(required = true, last = true, value_name = "COMMAND")]
    command: Vec<std::ffi::OsString>,
}

#[derive(Args, Debug)]
struct EachArgs {
    /// The policy file.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The policy client the paths are decided for (default: the policy's only client).
    #[arg(long, value_name = "NAME")]
    client: Option<String>,
    /// Paths on stdin end with NUL, not newline.
    #[arg(short = '0', long = "null")]
    null: bool,
    /// Items run at once (each under a uid of its own).
    #[arg(short = 'j', long = "jobs", default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    jobs: u16,
    /// Write each item's stdout to DIR/INDEX.out instead of the JSON line.
    #[arg(long, value_name = "DIR")]
    stdout_dir: Option<PathBuf>,
    #[command(flatten)]
    limits: crate::each::cli::LimitArgs,
    /// The command run for each path, and its arguments.
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

#[derive(Args, Debug)]
struct PutArgs {
    /// The broker's socket.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The file to write, by absolute path.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

#[derive(Args, Debug)]
struct LsArgs {
    /// The broker's socket.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Directories to list, by absolute path.
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
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
every allow rule, rules written twice, and capabilities the policy needs that the \
service unit does not grant (write or create: CAP_DAC_OVERRIDE; owner or group: \
CAP_CHOWN), naming the unit's lines. The unit is --unit, else the installed \
fdbroker.service with its drop-ins, else the one fdbroker ships."
    )]
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Treat warnings as errors (exit 1).
        #[arg(long)]
        strict: bool,
        /// The service unit to check capabilities against.
        #[arg(long, value_name = "UNIT")]
        unit: Option<PathBuf>,
    },
    /// Show the decision for one request and the rule that made it.
    #[command(
        after_help = "Example:\n  fdbroker policy explain policy.toml --uid 1001 --access read /var/spool/quarantine/a.bin\n\n\
Exits 0 if the request would be granted, 1 if denied, 2 on errors (a broken policy file, \
an unknown user).\n\
--spawn models `fdbroker run`, which serves its worker as --client (or the only client) \
whatever its uid."
    )]
    Explain {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The peer's uid (number or user name).
        #[arg(long, required_unless_present = "spawn")]
        uid: Option<String>,
        /// As `fdbroker run` serves its worker: as the client --client names.
        #[arg(long)]
        spawn: bool,
        /// With --spawn: the client the worker is served as (default: the only one).
        #[arg(long, value_name = "NAME", requires = "spawn")]
        client: Option<String>,
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
    /// Turn the denials of an audit log into allow rules to review.
    #[command(
        after_help = "Example:\n  journalctl -u fdbroker -o cat > audit.log\n  \
fdbroker policy suggest --audit audit.log --client scanner\n\n\
Reads audit lines in text or JSON form, journal output included (`-`: stdin). Each path \
refused by the policy (and each one granted by a learning scope, mode=\"learn\") becomes \
the narrowest exact rule with the access it needed; more than --collapse siblings with the \
same access fold into DIR/*. Paths a deny rule refused are listed, not suggested. Prints \
TOML to stdout (with --policy: that whole file with the rules added). Exits 0, or 2 on errors."
    )]
    Suggest {
        /// The audit log.
        #[arg(long, value_name = "LOG")]
        audit: PathBuf,
        /// Only this client's denials.
        #[arg(long, value_name = "NAME")]
        client: Option<String>,
        /// Print this policy with the rules added to its client instead of a fragment.
        #[arg(long, value_name = "FILE", requires = "client")]
        policy: Option<PathBuf>,
        /// Fold more than N siblings with the same access into one DIR/* rule (0: never).
        #[arg(long, value_name = "N", default_value_t = 8)]
        collapse: usize,
    },
    /// What a change to a policy grants and takes away, per client.
    #[command(
        after_help = "Example:\n  fdbroker policy diff /etc/fdbroker/policy.toml policy.new.toml\n\n\
Lines start with + (grants more), - (grants less) or ~ (changed). Exits 0 when the two \
mean the same, 1 when they differ, 2 on errors."
    )]
    Diff {
        #[arg(value_name = "OLD")]
        old: PathBuf,
        #[arg(value_name = "NEW")]
        new: PathBuf,
    },
    /// Re-decide every decision of an audit log under a policy: which would flip.
    #[command(
        after_help = "Example:\n  fdbroker policy replay policy.new.toml --audit audit.log\n\n\
Each flip is printed with its count, client, request and rule, grants taken away first. \
Exits 0 if none flips, 1 if any does (or the log held more distinct decisions than it can judge: \
then a flip cannot be ruled out), 2 on errors."
    )]
    Replay {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The audit log (`-`: stdin).
        #[arg(long, value_name = "LOG")]
        audit: PathBuf,
    },
    /// What one identity may access, rule by rule, with what is carved out.
    #[command(
        after_help = "Example:\n  fdbroker policy who /etc/fdbroker/policy.toml --uid scanner\n\n\
Exits 0, 1 if the identity is no client (the broker refuses it), 2 on errors."
    )]
    Who {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The peer's uid (number or user name).
        #[arg(long, required_unless_present = "client", conflicts_with = "client")]
        uid: Option<String>,
        /// The peer's gid (default: the user's primary group).
        #[arg(long, requires = "uid")]
        gid: Option<String>,
        /// A client by name.
        #[arg(long, value_name = "NAME")]
        client: Option<String>,
    },
}

/// Run the command line; the binary's `main` is only this.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Cat(args) => crate::cat::cat_main(args.socket.as_deref(), &args.files),
        Command::Put(args) => crate::put::put_main(args.socket.as_deref(), &args.file),
        Command::Ls(args) => crate::ls::ls_main(args.socket.as_deref(), &args.dirs),
        Command::Policy(PolicyCommand::Check { file, strict, unit }) => {
            crate::inspect::check_main(&file, strict, unit.as_deref())
        }
        Command::Policy(PolicyCommand::Explain {
            file,
            uid,
            spawn,
            client,
            gid,
            access,
            path,
        }) => {
            let who = if spawn {
                crate::inspect::Asker::Spawn(client)
            } else {
                crate::inspect::Asker::Peer(uid.unwrap_or_default())
            };
            crate::inspect::explain_main(&file, who, gid.as_deref(), access, &path)
        }
        Command::Policy(PolicyCommand::Suggest {
            audit,
            client,
            policy,
            collapse,
        }) => crate::inspect::evidence::suggest_main(
            &audit,
            client.as_deref(),
            policy.as_deref(),
            collapse,
        ),
        Command::Policy(PolicyCommand::Diff { old, new }) => {
            crate::inspect::diff::diff_main(&old, &new)
        }
        Command::Policy(PolicyCommand::Replay { file, audit }) => {
            crate::inspect::evidence::replay_main(&file, &audit)
        }
        Command::Policy(PolicyCommand::Who {
            file,
            uid,
            gid,
            client,
        }) => {
            crate::inspect::who::who_main(&file, uid.as_deref(), gid.as_deref(), client.as_deref())
        }
        Command::Run(args) => spawn(args),
        Command::Completions { shell } => completions(shell),
        Command::Version { check, json } => crate::doctor::version_main(check, json),
        Command::Each(args) => {
            crate::audit::init_logging(LogFormat::Text);
            let jobs = usize::from(args.jobs);
            crate::each::command::each_main(crate::each::command::EachSpec {
                config: crate::each::Config {
                    policy: args.policy,
                    client: args.client,
                    limits: args.limits.limits(),
                    jobs,
                    queue: jobs,
                    stdout_dir: args.stdout_dir,
                },
                null: args.null,
                command: args.command,
            })
        }
        Command::Status(args) => {
            crate::status::status_main(args.pid, args.socket.as_deref(), args.json)
        }
        Command::Reload(args) => crate::daemon::reload::reload_main(
            args.policy.as_deref(),
            args.replay.as_deref().map(|log| (log, args.force)),
            args.pid,
            std::time::Duration::from_secs(args.timeout),
        ),
    }
}

fn completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory as _;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "fdbroker", &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::sink::eprint_line(&format!("fdbroker: cannot write the completions: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn spawn(args: RunArgs) -> ExitCode {
    match &args.log_file {
        None => crate::audit::init_logging(args.log_format),
        Some(path) => {
            if let Err(e) = crate::log::file::open_append(path)
                .and_then(|f| crate::audit::init_logging_to_file(args.log_format, f))
            {
                log::sink::eprint_line(&format!("fdbroker: --log-file {}: {e}", path.display()));
                // As for any broker that cannot start its worker.
                return ExitCode::from(126);
            }
        }
    }
    let learn = args.learn.map(|out| crate::spawn::learn::Learn {
        out,
        scope: args.learn_scope,
        collapse: args.learn_collapse,
    });
    let spec = crate::spawn::broker::Spawn {
        policy: args.policy,
        learn,
        client: args.client,
        user: args.user,
        transparent: args.transparent,
        fail_on_denial: args.fail_on_denial,
        limits: args.limits.limits(),
        command: args.command,
    };
    match crate::spawn::broker::spawn_main(spec) {
        Ok(code) => code,
        Err(e) => {
            log::sink::eprint_user_line(&format!("fdbroker: {e}"));
            ExitCode::from(e.exit_code())
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    // A failure to start is one line, marked as an error for the journal.
    fn fail(msg: impl std::fmt::Display) -> ExitCode {
        log::fatal(&msg);
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
                // `ExecStartPre=` may have a journal that does not read: never panic.
                let _ = writeln!(std::io::stdout().lock(), "{}: ok", args.policy.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                // `ExecStartPre=`: the reason also becomes the unit's status line, so
                // `systemctl status` shows it without the journal (NotifyAccess=exec).
                if let Ok(Some(manager)) = crate::systemd::notify::Notifier::from_env() {
                    let status = format!("policy refused, not started: {e}");
                    let _ = manager.send(&[crate::systemd::notify::NotifyState::Status(&status)]);
                }
                fail(e)
            }
        };
    }
    // Started by the monitor: this process is a server. Otherwise it is the monitor,
    // which starts servers (this binary again, with these arguments).
    match std::env::var(crate::server::control::ENV_CONTROL_FD) {
        Ok(fd) => crate::daemon::server::server_main(
            crate::daemon::server::Serve {
                policy: args.policy,
                socket: args.socket,
                threads: args.threads,
                log_format: args.log_format,
            },
            &fd,
        ),
        Err(_) => {
            crate::audit::init_logging(args.log_format);
            crate::daemon::monitor::monitor_main(std::env::args_os().collect())
        }
    }
}
