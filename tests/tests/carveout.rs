//! A directory grant reveals nothing about a deny carve-out beneath it (issue 19,
//! section 5): a worker holding what the broker passed cannot `fstatat`/`readlinkat`
//! its way into a denied subtree, and listing the directory through the broker leaves
//! the carve-out out. Real broker, real `nobody` processes.
//!
//! The tree is built so that only a descriptor could reach the carve-out: the directory
//! above the granted one is root-only (0700), so `nobody` cannot name any of it by
//! path, while the granted directory and the carve-out themselves are searchable
//! (0755), as many real trees are. A descriptor for the granted directory is then a
//! way past the root-only directory above it.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{
    Broker, TempDir, errno_of, fdbroker_bin, run_as_nobody, run_with_timeout, sibling_bin, text,
};
use std::io::Read as _;
use std::process::Command;
use std::time::Duration;

const SECRET: &[u8] = b"a secret of exactly 37 bytes, really.";
const LINK_TARGET: &str = "target-named-only-in-the-carve-out";

fn tree() -> TempDir {
    let t = TempDir::new("carveout");
    t.file("vault/tree/a.txt", b"alpha", 0o644);
    t.file("vault/tree/sub/b.txt", b"beta!", 0o644);
    t.file("vault/tree/keys/k.pem", SECRET, 0o600);
    t.file("vault/open/c.txt", b"gamma", 0o644);
    t.file("vault/open/deep/c.txt", b"delta", 0o644);
    std::os::unix::fs::symlink(LINK_TARGET, t.join("vault/tree/keys/link")).unwrap();
    t.dir("vault", 0o700);
    for d in [
        "vault/tree",
        "vault/tree/sub",
        "vault/tree/keys",
        "vault/open",
        "vault/open/deep",
    ] {
        t.dir(d, 0o755);
    }
    t
}

const POLICY: &str = r#"
[broker]
socket_mode = "0666"

[[client]]
name = "tester"
users = [0, {nobody}]

  [[client.allow]]
  path = "{dir}/vault/tree/"
  access = ["read", "directory"]

  [[client.deny]]
  path = "{dir}/vault/tree/keys/"

  [[client.allow]]
  path = "{dir}/vault/open/"
  access = ["read", "directory"]
"#;

/// Whether `s` holds the secret's size as a number of its own (not as digits inside
/// another, such as a temporary directory's process id).
fn names_secret_size(s: &str) -> bool {
    let size = SECRET.len().to_string();
    s.split(|c: char| !c.is_ascii_digit()).any(|n| n == size)
}

/// `library-probe ARGS` as nobody against the broker; its stdout lines.
fn probe(b: &Broker, args: &[&str]) -> Vec<String> {
    let mut cmd = Command::new(sibling_bin("library-probe"));
    cmd.args(args).env("FDBROKER_SOCKET", &b.socket);
    let out = run_as_nobody(&mut cmd);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn a_granted_directory_descriptor_reveals_nothing_of_a_carve_out() {
    let t = tree();
    let b = Broker::start(&t, POLICY);
    let dir = t.join("vault/tree");
    // nobody cannot reach the tree by path: only a descriptor could.
    let direct = run_as_nobody(Command::new("/usr/bin/stat").arg(t.join("vault/tree/a.txt")));
    assert!(
        !direct.status.success(),
        "nobody could stat the tree itself"
    );

    let lines = probe(
        &b,
        &[
            "peek",
            dir.to_str().unwrap(),
            "keys/k.pem",
            "keys/missing",
            "keys/link",
            "keys",
        ],
    );
    let all = lines.join("\n");
    // Nothing about the secret: not its size, not its link's target, and its name
    // answers exactly as a name that does not exist.
    assert!(
        !names_secret_size(&all) && !all.contains(LINK_TARGET),
        "{all}"
    );
    let of = |name: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.split(' ').nth(1) == Some(name))
            .map(|l| l.replace(name, "NAME"))
            .collect()
    };
    assert_eq!(of("keys/k.pem"), of("keys/missing"), "{all}");
    assert_eq!(of("keys/link"), of("keys/missing"), "{all}");
    // The descriptor itself is refused, with a reason that says why, and the audit line
    // names the deny rule beneath.
    let err = lines
        .iter()
        .find(|l| l.starts_with("ERR"))
        .unwrap_or_else(|| panic!("the descriptor was passed: {all}"));
    assert!(
        err.contains("PermissionDenied 13") && err.contains("hides beneath it"),
        "{err}"
    );
    b.wait_log("would reveal what the deny rule at", 1);

    // A directory with no carve-out within reach is still passed, and works: lookups
    // through it, `..` included, stay in what the policy lets the worker see.
    let lines = probe(
        &b,
        &[
            "peek",
            t.join("vault/open/deep").to_str().unwrap(),
            "c.txt",
            "../c.txt",
        ],
    );
    assert!(
        lines.contains(&"PEEK c.txt 5 100644 0".to_owned()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"PEEK ../c.txt 5 100644 0".to_owned()),
        "{lines:#?}"
    );
}

#[test]
fn a_descriptor_beneath_the_carve_outs_parent_is_no_way_up_into_it() {
    let t = tree();
    let b = Broker::start(&t, POLICY);
    // `sub` has nothing denied beneath it, but `..` from it is the granted directory,
    // searchable by nobody, and the carve-out is one step down from there.
    let lines = probe(
        &b,
        &[
            "peek",
            t.join("vault/tree/sub").to_str().unwrap(),
            "../keys/k.pem",
            "../keys/missing",
            "../keys/link",
        ],
    );
    let all = lines.join("\n");
    assert!(
        !names_secret_size(&all) && !all.contains(LINK_TARGET),
        "{all}"
    );
    let of = |name: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.split(' ').nth(1) == Some(name))
            .map(|l| l.replace(name, "NAME"))
            .collect()
    };
    assert_eq!(of("../keys/k.pem"), of("../keys/missing"), "{all}");
    assert_eq!(of("../keys/link"), of("../keys/missing"), "{all}");

    // Where the directory itself is not searchable by the worker, neither `..` nor any
    // other name leads anywhere through it, and the descriptor is passed.
    t.dir("vault/tree/sub", 0o700);
    let lines = probe(
        &b,
        &["peek", t.join("vault/tree/sub").to_str().unwrap(), "b.txt"],
    );
    assert!(
        lines.iter().any(|l| l.starts_with("PEEK b.txt")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("ERR")), "{lines:#?}");
}

#[test]
fn listing_a_directory_with_a_carve_out_leaves_the_carve_out_out() {
    let t = tree();
    let b = Broker::start(&t, POLICY);
    let lines = probe(&b, &["walk", t.join("vault/tree").to_str().unwrap()]);
    let entry = |rel: &str, kind: &str| format!("ENTRY {} {kind}", t.join(rel).display());
    for (rel, kind) in [
        ("vault/tree/a.txt", "file"),
        ("vault/tree/sub", "dir"),
        ("vault/tree/sub/b.txt", "file"),
    ] {
        assert!(lines.contains(&entry(rel, kind)), "{rel}: {lines:#?}");
    }
    assert!(
        !lines.iter().any(|l| l.contains("keys")),
        "the carve-out was listed: {lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("ERR")), "{lines:#?}");

    // The same through read_dir, as root's client of the same policy.
    let c = b.client();
    let mut names: Vec<String> = c
        .read_dir(t.join("vault/tree"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.txt", "sub"]);
    // The carve-out itself is refused exactly like a path outside the policy.
    let refusal = |p: &str| {
        let e = c.read_dir(t.join(p)).unwrap_err();
        (
            errno_of(&e),
            e.to_string().replace(t.join(p).to_str().unwrap(), "P"),
        )
    };
    assert_eq!(refusal("vault/tree/keys").0, libc::EACCES);
    assert_eq!(
        refusal("vault/tree/keys"),
        refusal("vault/not-in-the-policy")
    );
}

/// A spawn-mode policy granting `vault/tree/` to `nobody`, with `keys/` carved out.
fn carve_out_run_policy(t: &TempDir) -> std::path::PathBuf {
    t.file(
        "run.toml",
        format!(
            r#"
[sandbox]
read_only = ["/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache"]

[[client]]
name = "worker"
users = ["nobody"]
  [[client.allow]]
  path = "{dir}/vault/tree/"
  access = ["read", "directory"]
  [[client.deny]]
  path = "{dir}/vault/tree/keys/"
"#,
            dir = t.path().display()
        )
        .as_bytes(),
        0o644,
    )
}

#[test]
fn a_worker_is_not_started_where_its_working_directory_reaches_a_carve_out() {
    let t = tree();
    let policy = carve_out_run_policy(&t);
    let run_in = |cwd: &std::path::Path| {
        let mut cmd = Command::new(fdbroker_bin());
        cmd.args(["run", "--policy"])
            .arg(&policy)
            .args(["--", "/usr/bin/stat", "-c", "%s", "../keys/k.pem"])
            .current_dir(cwd);
        run_with_timeout(&mut cmd, Duration::from_secs(60))
    };
    // From `sub`, the worker's own `stat ../keys/k.pem` would go past the root-only
    // `vault` to the secret: refused before anything starts, with the reason.
    let out = run_in(&t.join("vault/tree/sub"));
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(!names_secret_size(&o), "{o}\n{e}");
    assert_eq!(out.status.code(), Some(1), "{o}\n{e}");
    assert!(e.contains("refusing to start the worker in"), "{e}");
    // From a directory nobody cannot search, `..` leads nowhere: the worker starts.
    t.dir("vault/tree/sub", 0o700);
    let out = run_in(&t.join("vault/tree/sub"));
    let e = text(&out.stderr);
    assert!(!e.contains("refusing to start"), "{e}");
    assert!(!names_secret_size(&text(&out.stdout)), "{e}");
}

#[test]
fn a_long_listing_arrives_whole_over_many_pages() {
    let t = tree();
    // More entries than one page holds (512), with names long enough that fewer than
    // that fit one frame: every name arrives once, in byte order.
    let mut want: Vec<String> = (0..1300)
        .map(|i| format!("{i:04}-{}", "n".repeat(200)))
        .collect();
    for name in &want {
        t.file(&format!("vault/tree/many/{name}"), b"", 0o644);
    }
    t.dir("vault/tree/many", 0o755);
    let b = Broker::start(&t, POLICY);
    let names: Vec<String> = b
        .client()
        .read_dir(t.join("vault/tree/many"))
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    want.sort();
    assert_eq!(names, want);
    // One audit line per page, each a listing.
    b.wait_log("access=\"list\"", 3);
}

#[test]
fn a_huge_listing_arrives_whole_while_another_uid_stays_served() {
    // Issue 19, F2: a page costs the broker O(page), not O(directory). More visible
    // names than the broker once held for a listing (65,536, then `E2BIG`); four
    // connections list it whole at once while a `nobody` worker opens a file: each
    // listing arrives whole and in order, and the open is answered.
    let t = tree();
    let many = t.join("vault/tree/many");
    std::fs::create_dir_all(&many).unwrap();
    let mut want: Vec<String> = (0..70_000).map(|i| format!("{i:05}")).collect();
    for name in &want {
        std::fs::write(many.join(name), b"").unwrap();
    }
    t.dir("vault/tree/many", 0o755);
    let b = Broker::start(&t, POLICY);
    want.sort();
    let listers: Vec<_> = (0..4)
        .map(|_| {
            let client = b.client();
            let many = many.clone();
            std::thread::spawn(move || -> Result<Vec<String>, String> {
                Ok(client
                    .read_dir(&many)
                    .map_err(|e| e.to_string())?
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect())
            })
        })
        .collect();
    let out = fdbroker_tests::cat_as_nobody(&b.socket, &[&t.join("vault/open/c.txt")]);
    assert!(
        out.status.success() && out.stdout == b"gamma",
        "{}\n{}",
        text(&out.stderr),
        b.log()
    );
    for lister in listers {
        let names = lister
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}\n{}", b.log()));
        assert!(
            names == want,
            "{} names listed of {}",
            names.len(),
            want.len()
        );
    }
}

/// Inherited descriptors are no way past the policy either (issue 19, finding F3): a
/// `fdbroker run` started with a directory and a pipe open above stderr hands the
/// worker neither, so it cannot `fstatat` through the directory into the carve-out,
/// and it keeps only stdin, stdout, stderr and its connection (`FDBROKER_FD`). In
/// transparent mode the same holds for the program its supervisor forks (which keeps
/// a connection too).
#[test]
fn a_worker_inherits_no_descriptor_but_its_stdio_and_its_connection() {
    let t = tree();
    let policy = carve_out_run_policy(&t);
    // `/proc/self/fd/N` is a link exactly while descriptor N is open; the `stat` is the
    // attack itself, through the inherited directory into the carve-out.
    let script = r#"for n in $(seq 3 64); do if [ -L /proc/self/fd/$n ]; then echo "open $n"; fi; done
echo "connection $FDBROKER_FD"
/usr/bin/stat -L -c 'size %s' /proc/self/fd/4/keys/k.pem"#;
    for mode in [&[][..], &["--transparent"][..]] {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(r#"exec "$@" 4<"$0" 5<&0"#)
            .arg(t.join("vault/tree"))
            .arg(fdbroker_bin())
            .args(["run", "--policy"])
            .arg(&policy)
            .args(mode)
            .args(["--", "/bin/sh", "-c", script])
            .current_dir("/");
        // Stdin is a pipe (fed, then closed), so `5<&0` is an inherited pipe.
        let out =
            fdbroker_tests::run_with_input(&mut cmd, Some(Vec::new()), Duration::from_secs(60));
        let (o, e) = (text(&out.stdout), text(&out.stderr));
        assert!(
            !o.contains(&format!("size {}", SECRET.len())),
            "{mode:?}\n{o}\n{e}"
        );
        let open: Vec<&str> = o.lines().filter_map(|l| l.strip_prefix("open ")).collect();
        let connection = o
            .lines()
            .find_map(|l| l.strip_prefix("connection "))
            .unwrap_or_else(|| panic!("{mode:?}: the worker did not run:\n{o}\n{e}"));
        assert_eq!(open, [connection], "{mode:?}\n{o}\n{e}");
    }
}

/// A directory (or an `O_PATH` handle) on stdin, stdout or stderr would be the same
/// handle past the policy, under a number the worker must keep: `fdbroker run` refuses
/// to start, naming the descriptor, and the command never runs.
#[test]
fn a_worker_is_not_started_with_a_directory_or_a_path_handle_on_its_stdio() {
    use std::os::fd::OwnedFd;
    use std::process::Stdio;
    let t = tree();
    let policy = carve_out_run_policy(&t);
    let run_with = |fd: usize, handle: OwnedFd| {
        let mut cmd = Command::new(fdbroker_bin());
        cmd.args(["run", "--policy"])
            .arg(&policy)
            .args(["--", "/bin/sh", "-c", "echo started >&2"])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match fd {
            0 => cmd.stdin(handle),
            1 => cmd.stdout(handle),
            _ => cmd.stderr(handle),
        };
        let mut child = cmd.spawn().unwrap();
        let status = fdbroker_tests::wait_exit(&mut child, Duration::from_secs(60))
            .expect("fdbroker run did not exit in time");
        // A few lines at most: they fit the pipes, read once it has exited.
        let mut said = String::new();
        for r in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read>),
            child
                .stderr
                .take()
                .map(|e| Box::new(e) as Box<dyn std::io::Read>),
        ]
        .into_iter()
        .flatten()
        {
            let mut r = r;
            r.read_to_string(&mut said).unwrap();
        }
        (status.code(), said)
    };
    let dir = || OwnedFd::from(std::fs::File::open(t.join("vault/tree")).unwrap());
    let path_handle = || {
        nix::fcntl::open(
            &t.join("vault/tree/a.txt"),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap()
    };
    let (code, said) = run_with(0, dir());
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("descriptor 0 (standard input)"), "{said}");
    assert!(said.contains("directory"), "{said}");
    assert!(!said.contains("started"), "{said}");
    let (code, said) = run_with(1, path_handle());
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("descriptor 1 (standard output)"), "{said}");
    assert!(!said.contains("started"), "{said}");
}
