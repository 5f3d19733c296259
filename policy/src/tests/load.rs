//! Loading: settings and their defaults, and every load error with its exact position.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{load_err, parse};
use crate::{
    AccessSet, AuditFailure, BrokerSettings, ClientId, Effect, LoadErrorKind, PatternKind, Policy,
    RootId, RuleId, RuleOptions, SandboxSettings, Symlinks, UidRange, UserSpec,
};

/// A minimal valid client on lines 1 to 3; tests append to it from line 4 on.
const C: &str = "[[client]]\nname = \"c\"\nusers = [1001]\n";

fn with_c(rest: &str) -> String {
    format!("{C}{rest}")
}

fn err(text: &str) -> String {
    load_err(text).to_string()
}

#[test]
fn the_documented_example_loads() {
    let p = parse(
        r#"
[broker]
socket = "/run/fdbroker/fdbroker.sock"
socket_mode = "0660"
socket_group = "nogroup"
max_connections = 4096
max_connections_per_uid = 1024
max_batch = 128
idle_timeout = 300
confine = true

[sandbox]
read_only = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc/ld.so.cache"]
user = "dynamic"
uid_range = "0x70000000-0x7000ffff"

[[client]]
name = "scanner"
users = ["nobody", 1001]
groups = ["nogroup"]

  [[client.allow]]
  path = "/var/spool/quarantine/"
  access = ["read"]
  symlinks = "none"
  devices = false
  hardlinks = false
  mode = "0600"
  same_filesystem = false

  [[client.allow]]
  path = "/etc/scanner/*.conf"
  access = ["read"]

  [[client.deny]]
  path = "/var/spool/quarantine/keys/"
"#,
    );
    let b = p.broker();
    assert_eq!(
        b.socket.as_deref(),
        Some(Path::new("/run/fdbroker/fdbroker.sock"))
    );
    assert_eq!(b.socket_mode, 0o660);
    assert_eq!(b.socket_group, Some(65534));
    assert_eq!(b.max_connections, 4096);
    assert_eq!(b.max_connections_per_uid, 1024);
    assert_eq!(b.max_batch, 128);
    assert_eq!(b.idle_timeout, Some(Duration::from_secs(300)));
    assert!(b.confine);
    assert_eq!(p.sandbox(), &SandboxSettings::default());
    let c = p.client(ClientId(0));
    assert_eq!(c.name, "scanner");
    assert_eq!(c.users, [65534, 1001]);
    assert_eq!(c.groups, [65534]);
    assert_eq!(c.rules, [RuleId(0), RuleId(1), RuleId(2)]);
    assert_eq!(
        p.roots(),
        [
            PathBuf::from("/var/spool/quarantine"),
            PathBuf::from("/etc/scanner")
        ]
    );
    let r = p.rule(RuleId(0));
    assert_eq!(r.effect, Effect::Allow);
    assert_eq!(r.pattern, "/var/spool/quarantine/");
    assert_eq!(r.kind, PatternKind::Subtree);
    assert_eq!(r.access, AccessSet::READ);
    assert_eq!(r.options, RuleOptions::default());
    assert_eq!(r.root, Some(RootId(0)));
    assert_eq!((r.location.line, r.location.col), (23, 10));
    let d = p.rule(RuleId(2));
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.root, None);
    assert_eq!(d.access, AccessSet::EMPTY);
    assert_eq!(d.client, ClientId(0));
}

#[test]
fn defaults_apply_when_tables_are_absent() {
    let p = parse(C);
    assert_eq!(p.broker(), &BrokerSettings::default());
    let b = p.broker();
    assert_eq!(b.socket, None);
    assert_eq!(b.socket_mode, 0o660);
    assert_eq!(b.socket_group, None);
    assert_eq!(
        (b.max_connections, b.max_connections_per_uid, b.max_batch),
        (4096, 1024, 128)
    );
    assert_eq!(b.idle_timeout, Some(Duration::from_secs(300)));
    assert!(b.confine);
    // Refusing grants that cannot be audited is the safe default.
    assert_eq!(b.audit_failure, AuditFailure::Refuse);
    let s = p.sandbox();
    let want: Vec<PathBuf> = [
        "/usr",
        "/bin",
        "/sbin",
        "/lib",
        "/lib64",
        "/etc/ld.so.cache",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(s.read_only, want);
    assert_eq!(s.user, UserSpec::Dynamic);
    assert_eq!(s.uid_range, UidRange::DEFAULT);
    assert_eq!(s.uid_range.to_string(), "1879048192-1879113727");
    assert_eq!(p.origin(), Path::new("p.toml"));
    assert!(p.roots().is_empty());
}

#[test]
fn settings_other_than_defaults() {
    let p = parse(&format!(
        "[broker]\nsocket_mode = \"600\"\nsocket_group = 4242\nidle_timeout = 0\nconfine = false\nmax_batch = 1\n\
         [sandbox]\nread_only = []\nuser = 65534\n{C}"
    ));
    let b = p.broker();
    assert_eq!(b.socket_mode, 0o600);
    assert_eq!(b.socket_group, Some(4242));
    assert_eq!(b.idle_timeout, None);
    assert!(!b.confine);
    assert_eq!(b.max_batch, 1);
    assert!(p.sandbox().read_only.is_empty());
    for (word, want) in [
        ("refuse", AuditFailure::Refuse),
        ("serve", AuditFailure::Serve),
    ] {
        let p = parse(&format!("[broker]\naudit_failure = \"{word}\"\n{C}"));
        assert_eq!(p.broker().audit_failure, want);
        assert_eq!(want.as_str(), word);
    }
    assert_eq!(
        err(&format!("[broker]\naudit_failure = \"ignore\"\n{C}")),
        "p.toml:2:17: unknown audit_failure setting \"ignore\": expected \"refuse\" or \"serve\""
    );
    assert_eq!(p.sandbox().user, UserSpec::Id(65534));
}

#[test]
fn uid_range_is_checked_and_dynamic_is_a_keyword() {
    let p = parse(&format!(
        "[sandbox]\nuser = \"dynamic\"\nuid_range = \"61184-0xffef\"\n{C}"
    ));
    assert_eq!(p.sandbox().user, UserSpec::Dynamic);
    assert_eq!(
        p.sandbox().uid_range,
        UidRange {
            first: 61184,
            last: 65519
        }
    );
    assert_eq!(p.sandbox().uid_range.len(), 4336);
    for bad in [
        "0-10",
        "10-9",
        "100",
        "1-4294967295",
        "60000-65534",
        "a-b",
        "-5-7",
        "+1-2",
        "0x+1-0x2",
        "0x-5",
        "",
    ] {
        let e = load_err(&format!("[sandbox]\nuid_range = \"{bad}\"\n{C}"));
        assert!(
            matches!(e.kind(), LoadErrorKind::BadUidRange(t) if t == bad),
            "{bad}: {e}"
        );
        assert_eq!(e.line(), Some(2), "{bad}");
    }
}

#[test]
fn allow_rule_options_are_parsed() {
    let p = parse(&with_c(
        "[[client.allow]]\npath = \"/out/\"\naccess = [\"create\", \"write\", \"directory\"]\n\
         symlinks = \"beneath\"\ndevices = true\nhardlinks = true\nmode = \"0640\"\nsame_filesystem = true\n",
    ));
    let r = p.rule(RuleId(0));
    assert_eq!(
        r.access,
        AccessSet::CREATE | AccessSet::WRITE | AccessSet::DIRECTORY
    );
    assert_eq!(
        r.options,
        RuleOptions {
            symlinks: Symlinks::Beneath,
            devices: true,
            hardlinks: true,
            create_mode: 0o640,
            same_filesystem: true,
            owner: None,
            group: None,
            allow_reopen: false,
        }
    );
}

#[test]
fn created_files_ownership_and_reopen_options() {
    let p = parse(&with_c(
        "[[client.allow]]\npath = \"/out/\"\naccess = [\"create\"]\nowner = 0\ngroup = \"root\"\n\
         [[client.allow]]\npath = \"/in/\"\nallow_reopen = true\n",
    ));
    let o = p.rule(RuleId(0)).options;
    assert_eq!(
        (o.owner, o.group, o.allow_reopen),
        (Some(0), Some(0), false)
    );
    let o = p.rule(RuleId(1)).options;
    assert_eq!((o.owner, o.group, o.allow_reopen), (None, None, true));
    // Ownership is for files the rule creates; an existing file's is never changed.
    assert_eq!(
        err(&with_c(
            "[[client.allow]]\npath = \"/a/\"\naccess = [\"write\"]\nowner = 0\n"
        )),
        "p.toml:7:9: owner applies only to files the rule creates, and this rule does not \
         grant create (an existing file's ownership is never changed)"
    );
    assert!(
        err(&with_c(
            "[[client.allow]]\npath = \"/a/\"\naccess = [\"create\"]\ngroup = \"no-such-group-x\"\n"
        ))
        .contains("unknown group \"no-such-group-x\"")
    );
}

#[test]
fn rules_are_numbered_in_file_order_across_allow_and_deny() {
    let p = parse(&with_c(
        "[[client.deny]]\npath = \"/a/x\"\n[[client.allow]]\npath = \"/a/\"\n[[client.deny]]\npath = \"/a/y\"\n\
         [[client]]\nname = \"d\"\nusers = [7]\n[[client.allow]]\npath = \"/a/\"\n",
    ));
    let effects: Vec<(Effect, &str)> = p
        .rules()
        .iter()
        .map(|r| (r.effect, r.pattern.as_str()))
        .collect();
    assert_eq!(
        effects,
        [
            (Effect::Deny, "/a/x"),
            (Effect::Allow, "/a/"),
            (Effect::Deny, "/a/y"),
            (Effect::Allow, "/a/"),
        ]
    );
    assert_eq!(p.rule(RuleId(3)).client, ClientId(1));
    // Both clients' `/a/` share one held root.
    assert_eq!(p.roots(), [PathBuf::from("/a")]);
    assert_eq!(p.rule(RuleId(1)).root, p.rule(RuleId(3)).root);
}

#[test]
fn io_errors_have_no_position() {
    let e = Policy::load(Path::new("/nonexistent/fdbroker-policy.toml")).unwrap_err();
    assert_eq!(e.line(), None);
    assert_eq!(e.col(), None);
    assert!(matches!(e.kind(), LoadErrorKind::Read(_)));
    assert_eq!(
        e.to_string(),
        "/nonexistent/fdbroker-policy.toml: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn load_reads_a_file() {
    let dir = std::env::temp_dir().join(format!("fdbroker-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.toml");
    std::fs::write(&file, C).unwrap();
    let p = Policy::load(&file).unwrap();
    assert_eq!(p.origin(), file);
    std::fs::write(&file, "[[client]]\nname = 3\n").unwrap();
    let e = Policy::load(&file).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2:8: invalid type: integer `3`, expected a string",
            file.display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn accessors_split_the_position_and_message() {
    let e = load_err("bogus = 1\n");
    assert_eq!(e.file(), Path::new("p.toml"));
    assert_eq!((e.line(), e.col()), (Some(1), Some(1)));
    assert_eq!(
        e.message(),
        "unknown field `bogus`, expected one of `broker`, `sandbox`, `client`"
    );
}

#[test]
fn toml_syntax_errors() {
    assert_eq!(err("[broker\n"), "p.toml:1:8: unclosed table, expected `]`");
    assert_eq!(
        err(&with_c("[[client.allow]]\npath = \"/a\"\npath = \"/b\"\n")),
        "p.toml:6:1: duplicate key"
    );
}

#[test]
fn unknown_keys_anywhere() {
    assert_eq!(
        err(&format!("bogus = 1\n{C}")),
        "p.toml:1:1: unknown field `bogus`, expected one of `broker`, `sandbox`, `client`"
    );
    assert!(
        err(&format!("[broker]\nsocket_path = \"/x\"\n{C}"))
            .starts_with("p.toml:2:1: unknown field `socket_path`")
    );
    assert!(
        err(&format!("[sandbox]\nreadonly = []\n{C}"))
            .starts_with("p.toml:2:1: unknown field `readonly`")
    );
    assert!(
        err(&format!("{C}user = 1\n"))
            .starts_with("p.toml:4:1: unknown field `user`, expected one of")
    );
    assert!(
        err(&with_c(
            "[[client.allow]]\npath = \"/a\"\nsymlink = \"beneath\"\n"
        ))
        .starts_with("p.toml:6:1: unknown field `symlink`, expected one of")
    );
    assert_eq!(
        err(&with_c(
            "[[client.deny]]\npath = \"/a\"\naccess = [\"read\"]\n"
        )),
        "p.toml:6:1: unknown field `access`, expected `path` or `listed`"
    );
}

#[test]
fn wrong_types_and_missing_keys() {
    assert_eq!(
        err("[[client]]\nusers = [1]\n"),
        "p.toml:1:1: missing field `name`"
    );
    assert_eq!(
        err("[[client]]\nname = \"c\"\nusers = \"root\"\n"),
        "p.toml:3:9: invalid type: string \"root\", expected a sequence"
    );
    assert_eq!(
        err("[[client]]\nname = \"c\"\nusers = [1.5]\n"),
        "p.toml:3:10: invalid type: floating point `1.5`, expected a name (string) or a numeric id (integer)"
    );
    assert_eq!(
        err(&with_c("[[client.allow]]\naccess = [\"read\"]\n")),
        "p.toml:4:1: missing field `path`"
    );
}

#[test]
fn access_words() {
    assert_eq!(
        err(&with_c(
            "[[client.allow]]\npath = \"/a\"\naccess = [\"read\", \"read-write\"]\n"
        )),
        "p.toml:6:19: unknown access \"read-write\": expected read, write, create or directory"
    );
    assert_eq!(
        err(&with_c("[[client.allow]]\npath = \"/a\"\naccess = []\n")),
        "p.toml:6:10: empty access list: a rule must grant something"
    );
    let p = parse(&with_c("[[client.allow]]\npath = \"/a\"\n"));
    assert_eq!(p.rule(RuleId(0)).access, AccessSet::READ);
}

#[test]
fn client_names() {
    assert_eq!(
        err(&format!("{C}{C}")),
        "p.toml:5:8: duplicate client name \"c\" (first defined at 2:8)"
    );
    assert_eq!(
        err("[[client]]\nname = \"\"\nusers = [1]\n"),
        "p.toml:2:8: client name is empty"
    );
}

#[test]
fn a_client_must_match_someone() {
    let msg = "client \"d\" matches no one: give it `users` or `groups`";
    assert_eq!(
        err(&format!("{C}[[client]]\nname = \"d\"\n")),
        format!("p.toml:4:1: {msg}")
    );
    assert_eq!(
        err(&format!(
            "{C}\n[[client]]\nname = \"d\"\nusers = []\ngroups = []\n"
        )),
        format!("p.toml:5:1: {msg}")
    );
    // Groups alone are enough.
    parse("[[client]]\nname = \"g\"\ngroups = [\"nogroup\"]\n");
}

#[test]
fn ids_are_unique_across_clients() {
    assert_eq!(
        err(&format!("{C}[[client]]\nname = \"d\"\nusers = [5, 1001]\n")),
        "p.toml:6:13: uid 1001 is listed in client \"c\" and in client \"d\": a peer must match exactly one client"
    );
    // A name and a number for the same uid collide too.
    assert_eq!(
        err(
            "[[client]]\nname = \"a\"\nusers = [\"root\"]\n[[client]]\nname = \"b\"\nusers = [0]\n"
        ),
        "p.toml:6:10: uid 0 is listed in client \"a\" and in client \"b\": a peer must match exactly one client"
    );
    assert_eq!(
        err(
            "[[client]]\nname = \"c\"\ngroups = [\"nogroup\"]\n[[client]]\nname = \"d\"\ngroups = [65534]\n"
        ),
        "p.toml:6:11: gid 65534 is listed in client \"c\" and in client \"d\": a peer must match exactly one client"
    );
    // The same number as a uid in one client and a gid in another is fine.
    parse("[[client]]\nname = \"c\"\nusers = [5]\n[[client]]\nname = \"d\"\ngroups = [5]\n");
    assert_eq!(
        err("[[client]]\nname = \"c\"\nusers = [\"root\", 0]\n"),
        "p.toml:3:18: uid 0 is listed twice in client \"c\""
    );
}

#[test]
fn names_resolve_at_load() {
    let p = parse(
        "[[client]]\nname = \"c\"\nusers = [\"root\", \"nobody\"]\ngroups = [\"root\", \"nogroup\"]\n",
    );
    assert_eq!(p.client(ClientId(0)).users, [0, 65534]);
    assert_eq!(p.client(ClientId(0)).groups, [0, 65534]);
    assert_eq!(
        err("[[client]]\nname = \"c\"\nusers = [\"no-such-user-xyz\"]\n"),
        "p.toml:3:10: unknown user \"no-such-user-xyz\" (write numeric uids without quotes)"
    );
    assert_eq!(
        err("[[client]]\nname = \"c\"\ngroups = [\"no-such-group-xyz\"]\n"),
        "p.toml:3:11: unknown group \"no-such-group-xyz\" (write numeric gids without quotes)"
    );
    assert_eq!(
        err("[[client]]\nname = \"c\"\nusers = [-1]\n"),
        "p.toml:3:10: uid -1 is out of range (0 to 4294967294)"
    );
    assert_eq!(
        err("[[client]]\nname = \"c\"\ngroups = [4294967295]\n"),
        "p.toml:3:11: gid 4294967295 is out of range (0 to 4294967294)"
    );
}

#[test]
fn bad_rule_paths() {
    let cases = [
        ("relative/x", "path is not absolute"),
        ("", "path is empty"),
        ("/a/../b", "path has a `.` or `..` component"),
        ("/a/./", "path has a `.` or `..` component"),
        ("/a//b", "path has an empty component (`//`)"),
        ("/a//", "path has an empty component (`//`)"),
        ("/a/[ab]", "`[` is reserved glob syntax"),
        ("/a/{x,y}", "`{` is reserved glob syntax"),
        ("/a/x]", "`]` is reserved glob syntax"),
        ("/a/\\\\x", "`\\` is reserved glob syntax"),
        ("/a/**.c", "`**` must be a whole path component"),
        ("/a/b**/", "`**` must be a whole path component"),
    ];
    for (path, why) in cases {
        // The message quotes the path with `{:?}`, which turns the one backslash the
        // TOML escape `\\` stands for back into `\\`: the expected text is the TOML text.
        assert_eq!(
            err(&with_c(&format!("[[client.allow]]\npath = \"{path}\"\n"))),
            format!("p.toml:5:8: bad path \"{path}\": {why}"),
            "{path}"
        );
        assert_eq!(
            err(&with_c(&format!(
                "[[client.allow]]\npath = \"/ok\"\n[[client.deny]]\npath = \"{path}\"\n"
            ))),
            format!("p.toml:7:8: bad path \"{path}\": {why}"),
            "deny {path}"
        );
    }
    let long = format!("/{}", "a".repeat(4095));
    assert!(
        err(&with_c(&format!("[[client.allow]]\npath = \"{long}\"\n")))
            .ends_with(": path is longer than 4095 bytes")
    );
}

#[test]
fn octal_modes() {
    let socket = |m: &str| err(&format!("[broker]\nsocket_mode = \"{m}\"\n{C}"));
    assert_eq!(
        socket("0999"),
        "p.toml:2:15: bad socket_mode \"0999\": expected an octal string like \"0640\""
    );
    assert_eq!(
        socket(""),
        "p.toml:2:15: bad socket_mode \"\": expected an octal string like \"0640\""
    );
    assert_eq!(
        socket("0o660"),
        "p.toml:2:15: bad socket_mode \"0o660\": expected an octal string like \"0640\""
    );
    assert_eq!(
        socket("1777"),
        "p.toml:2:15: bad socket_mode \"1777\": must be at most 0777"
    );
    assert_eq!(
        socket("77777777777777"),
        "p.toml:2:15: bad socket_mode \"77777777777777\": must be at most 0777"
    );
    assert_eq!(
        err(&format!("[broker]\nsocket_mode = 660\n{C}")),
        "p.toml:2:15: invalid type: integer `660`, expected a string"
    );
    let create = |m: &str| {
        err(&with_c(&format!(
            "[[client.allow]]\npath = \"/o/\"\naccess = [\"create\"]\nmode = \"{m}\"\n"
        )))
    };
    assert_eq!(
        create("4755"),
        "p.toml:7:8: bad mode \"4755\": setuid, setgid and sticky bits are not allowed"
    );
    assert_eq!(
        create("2700"),
        "p.toml:7:8: bad mode \"2700\": setuid, setgid and sticky bits are not allowed"
    );
    assert_eq!(
        create("1600"),
        "p.toml:7:8: bad mode \"1600\": setuid, setgid and sticky bits are not allowed"
    );
    assert_eq!(
        create("10600"),
        "p.toml:7:8: bad mode \"10600\": must be at most 0777"
    );
    assert_eq!(
        create("rw-r--r--"),
        "p.toml:7:8: bad mode \"rw-r--r--\": expected an octal string like \"0640\""
    );
    let p = parse(&with_c(
        "[[client.allow]]\npath = \"/o/\"\naccess = [\"create\"]\nmode = \"0644\"\n",
    ));
    assert_eq!(p.rule(RuleId(0)).options.create_mode, 0o644);
}

#[test]
fn limits_are_range_checked() {
    let broker = |kv: &str| err(&format!("[broker]\n{kv}\n{C}"));
    assert_eq!(
        broker("max_batch = 0"),
        "p.toml:2:13: max_batch must be between 1 and 128, not 0"
    );
    assert_eq!(
        broker("max_batch = 129"),
        "p.toml:2:13: max_batch must be between 1 and 128, not 129"
    );
    assert_eq!(
        broker("max_connections = 0"),
        "p.toml:2:19: max_connections must be at least 1, not 0"
    );
    assert_eq!(
        broker("max_connections_per_uid = -5"),
        "p.toml:2:27: max_connections_per_uid must be at least 1, not -5"
    );
    assert_eq!(
        broker("idle_timeout = -1"),
        "p.toml:2:16: idle_timeout must be 0 (never) or a number of seconds, not -1"
    );
    assert_eq!(
        broker("confine = \"yes\""),
        "p.toml:2:11: invalid type: string \"yes\", expected a boolean"
    );
}

#[test]
fn socket_settings() {
    assert_eq!(
        err(&format!("[broker]\nsocket = \"run/x.sock\"\n{C}")),
        "p.toml:2:10: bad socket path \"run/x.sock\": path is not absolute"
    );
    assert_eq!(
        err(&format!("[broker]\nsocket = \"/run/x/\"\n{C}")),
        "p.toml:2:10: bad socket path \"/run/x/\": path ends with `/`"
    );
    let long = format!("/{}", "s".repeat(107));
    assert_eq!(
        err(&format!("[broker]\nsocket = \"{long}\"\n{C}")),
        format!(
            "p.toml:2:10: socket path \"{long}\" is 108 bytes; a Unix socket path holds at most 107"
        )
    );
    let fits = format!("/{}", "s".repeat(106));
    assert_eq!(
        parse(&format!("[broker]\nsocket = \"{fits}\"\n{C}"))
            .broker()
            .socket,
        Some(PathBuf::from(fits))
    );
    assert_eq!(
        err(&format!(
            "[broker]\nsocket_group = \"no-such-group-xyz\"\n{C}"
        )),
        "p.toml:2:16: unknown group \"no-such-group-xyz\" (write numeric gids without quotes)"
    );
}

#[test]
fn sandbox_settings() {
    assert_eq!(
        err(&format!("[sandbox]\nuser = \"root\"\n{C}")),
        "p.toml:2:8: the sandbox user must not be root"
    );
    assert_eq!(
        err(&format!("[sandbox]\nuser = 0\n{C}")),
        "p.toml:2:8: the sandbox user must not be root"
    );
    assert_eq!(
        err(&format!("[sandbox]\nread_only = [\"/usr\", \"lib\"]\n{C}")),
        "p.toml:2:22: bad sandbox path \"lib\": path is not absolute"
    );
    // Sandbox users are not resolved at load: spawn mode does that where it runs.
    let p = parse(&format!(
        "[sandbox]\nuser = \"worker-that-does-not-exist-here\"\n{C}"
    ));
    assert_eq!(
        p.sandbox().user,
        UserSpec::Name("worker-that-does-not-exist-here".into())
    );
}

#[test]
fn symlinks_setting() {
    assert_eq!(
        err(&with_c(
            "[[client.allow]]\npath = \"/a/\"\nsymlinks = \"follow\"\n"
        )),
        "p.toml:6:12: unknown symlinks setting \"follow\": expected \"none\" or \"beneath\""
    );
}

#[test]
fn no_clients() {
    let msg = "p.toml:1:1: policy has no [[client]]: it would refuse every connection";
    assert_eq!(err(""), msg);
    assert_eq!(err("[broker]\nconfine = true\n"), msg);
}

fn allow_then_deny(allow: &str, deny: &str) -> String {
    err(&with_c(&format!(
        "[[client.allow]]\npath = \"{allow}\"\n[[client.deny]]\npath = \"{deny}\"\n"
    )))
}

#[test]
fn fully_denied_allow_rules() {
    for allow in [
        "/q/keys/x",
        "/q/keys/",
        "/q/keys/*.c",
        "/q/keys/**",
        "/q/keys/a/b/",
    ] {
        assert_eq!(
            allow_then_deny(allow, "/q/keys/"),
            format!(
                "p.toml:5:8: allow rule \"{allow}\" is fully denied by deny rule \"/q/keys/\" at 7:8: it can never grant anything"
            )
        );
    }
    // Identical rules, and deny globs or exacts that match an exact allow.
    for (allow, deny) in [
        ("/q/*.c", "/q/*.c"),
        ("/q/a.c", "/q/a.c"),
        ("/q/a.c", "/q/*.c"),
        ("/q/a/b/c", "/q/**/c"),
        ("/q/a/", "/q/a/**"),
        ("/q/a/x", "/"),
    ] {
        assert!(
            allow_then_deny(allow, deny).contains(&format!(
                "allow rule \"{allow}\" is fully denied by deny rule \"{deny}\""
            )),
            "{allow} {deny}"
        );
    }
    // The deny coming first in the file changes nothing.
    assert_eq!(
        err(&with_c(
            "[[client.deny]]\npath = \"/q/keys/\"\n[[client.allow]]\npath = \"/q/keys/x\"\n"
        )),
        "p.toml:7:8: allow rule \"/q/keys/x\" is fully denied by deny rule \"/q/keys/\" at 5:8: it can never grant anything"
    );
    // Partial overlaps are what deny rules are for.
    for (allow, deny) in [
        ("/q/", "/q/keys/"),
        ("/q/**/x", "/q/keys/"),
        ("/q/*", "/q/*.c"),
        ("/q/keysx/", "/q/keys/"),
        ("/q/a/", "/q/a"),
    ] {
        parse(&with_c(&format!(
            "[[client.allow]]\npath = \"{allow}\"\n[[client.deny]]\npath = \"{deny}\"\n"
        )));
    }
    // Another client's deny is not this client's business.
    parse(&format!(
        "{C}[[client.allow]]\npath = \"/q/keys/x\"\n[[client]]\nname = \"d\"\nusers = [2]\n[[client.deny]]\npath = \"/q/keys/\"\n"
    ));
}

fn beneath(allow: &str, deny: &str) -> Result<Policy, String> {
    Policy::parse(
        &with_c(&format!(
            "[[client.allow]]\npath = \"{allow}\"\nsymlinks = \"beneath\"\n[[client.deny]]\npath = \"{deny}\"\n"
        )),
        Path::new("p.toml"),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn symlinks_beneath_with_a_deny_inside_the_root() {
    assert_eq!(
        beneath("/data/", "/data/secret").unwrap_err(),
        "p.toml:5:8: allow rule \"/data/\" has symlinks = \"beneath\" but deny rule \"/data/secret\" at 8:8 \
         lies inside its root \"/data\": a symlink under the root could lead to the denied path; \
         use symlinks = \"none\" or narrow the rule"
    );
    for (allow, deny) in [
        ("/data/in/x.txt", "/data/in/secret/"),
        ("/data/*.txt", "/data/keys/a.pem"),
        ("/data/", "/**/secret"),
        ("/data/in/", "/data/*/secret"),
        ("/data/in/", "/data/in"),
        ("/data/in/", "/data/*"),
    ] {
        let e = beneath(allow, deny).unwrap_err();
        assert!(
            e.contains(&format!("deny rule \"{deny}\"")),
            "{allow} {deny}: {e}"
        );
    }
    for (allow, deny) in [
        ("/data/in/", "/data/out/"),
        ("/data/in/x.txt", "/data/secret"),
        ("/data/in/", "/data/x*/secret"),
        ("/data/in/", "/data/*.key"),
    ] {
        assert!(beneath(allow, deny).is_ok(), "{allow} {deny}");
    }
    // Without `beneath` the combination is the ordinary use of a deny rule.
    parse(&with_c(
        "[[client.allow]]\npath = \"/data/\"\n[[client.deny]]\npath = \"/data/secret\"\n",
    ));
}

#[test]
fn hardlinks_with_a_deny_inside_the_root() {
    let parse = |allow: &str, deny: &str| {
        Policy::parse(
            &with_c(&format!(
                "[[client.allow]]\npath = \"{allow}\"\nhardlinks = true\n[[client.deny]]\npath = \"{deny}\"\n"
            )),
            Path::new("p.toml"),
        )
        .map_err(|e| e.to_string())
    };
    assert_eq!(
        parse("/data/", "/data/secret").unwrap_err(),
        "p.toml:5:8: allow rule \"/data/\" has hardlinks = true but deny rule \"/data/secret\" at 8:8 \
         lies inside its root \"/data\": a hard link under the root to a denied file is that file; \
         drop hardlinks or narrow the rule"
    );
    // A deny elsewhere is no concern of the rule's.
    assert!(parse("/data/", "/other/secret").is_ok());
}

/// A policy with `n` allow rules in one client.
fn with_rules(n: usize) -> String {
    let mut text = String::from(C);
    for i in 0..n {
        text.push_str(&format!("[[client.allow]]\npath = \"/srv/r{i}/\"\n"));
    }
    text
}

#[test]
fn the_rule_count_is_bounded_and_the_first_rule_beyond_is_named() {
    assert_eq!(
        parse(&with_rules(crate::MAX_RULES)).rules().len(),
        crate::MAX_RULES
    );
    let e = load_err(&with_rules(crate::MAX_RULES + 1));
    assert!(
        matches!(e.kind(), LoadErrorKind::TooManyRules { .. }),
        "{e}"
    );
    // C is three lines, each rule two: the first beyond starts on line 4 + 2 * MAX.
    let line = 4 + 2 * crate::MAX_RULES + 1;
    assert_eq!(
        e.to_string(),
        format!(
            "p.toml:{line}:8: too many rules: {}, a policy holds at most {} \
             (this is the first beyond)",
            crate::MAX_RULES + 1,
            crate::MAX_RULES
        )
    );
}

#[test]
fn policy_text_beyond_the_size_limit_is_refused_before_parsing() {
    let limit = usize::try_from(crate::MAX_POLICY_BYTES).unwrap();
    // Valid TOML up to the limit (a comment pads it), one byte more is refused.
    let mut text = with_c("#");
    text.push_str(&"x".repeat(limit - text.len()));
    parse(&text);
    text.push('x');
    let e = load_err(&text);
    assert!(matches!(e.kind(), LoadErrorKind::TooLarge { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!("p.toml: too large: a policy file holds at most {limit} bytes")
    );
}

#[test]
fn sandbox_limits_are_read_and_bad_ones_point_at_their_value() {
    let p = Policy::parse(
        "[sandbox]\ntime_limit = \"30s\"\ncpu_limit = \"2s\"\nmemory_limit = \"512M\"\n\
         pids_limit = 64\nfile_size_limit = \"1M\"\nnofile_limit = 128\noutput_limit = \"64K\"\n\
         [[client]]\nname = \"a\"\nusers = [1]\n",
        Path::new("p.toml"),
    )
    .expect("valid limits");
    let l = p.sandbox().limits;
    assert_eq!(l.time, Some(std::time::Duration::from_secs(30)));
    assert_eq!(l.cpu, Some(std::time::Duration::from_secs(2)));
    assert_eq!(l.memory, Some(512 << 20));
    assert_eq!(l.pids, Some(64));
    assert_eq!(l.file_size, Some(1 << 20));
    assert_eq!(l.nofile, Some(128));
    assert_eq!(l.output, Some(64 << 10));
    let e = Policy::parse(
        "[sandbox]\nmemory_limit = \"lots\"\n[[client]]\nname = \"a\"\nusers = [1]\n",
        Path::new("p.toml"),
    )
    .expect_err("a bad size");
    assert_eq!(
        e.to_string(),
        "p.toml:2:16: bad memory_limit \"lots\": not a size such as 4096, 64K, 512M or 2G"
    );
    let e = Policy::parse(
        "[sandbox]\npids_limit = 0\n[[client]]\nname = \"a\"\nusers = [1]\n",
        Path::new("p.toml"),
    )
    .expect_err("zero pids");
    assert!(
        e.to_string()
            .contains("pids_limit must be a positive number"),
        "{e}"
    );
}

/// A FIFO (or anything but a regular file) named as the policy is refused at once,
/// never waited on: a reload or root's `reload --replay` would hang on it.
#[test]
fn a_policy_that_is_not_a_regular_file_is_refused_without_waiting() {
    let dir = std::env::temp_dir().join(format!("fdbroker-policy-fifo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let fifo = dir.join("policy.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let err = crate::Policy::load(&fifo).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
    let err = crate::Policy::load(&dir).unwrap_err().to_string();
    assert!(
        err.contains("not a regular file") || err.contains("directory"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
