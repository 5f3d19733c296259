//! `fdbroker policy check` against the service unit (issue 23, part 3): a policy that
//! needs a capability the unit does not grant is a warning naming the unit's lines, and
//! the broker's own error for a missing capability names all three capability lists and
//! never suggests turning confinement off. Real units, a real unprivileged broker.
#![allow(clippy::unwrap_used)]

use fdbroker_tests::{TempDir, fdbroker_bin, repo_root, run_with_timeout, show, text};
use std::process::Command;
use std::time::Duration;

fn policy(t: &TempDir) -> std::path::PathBuf {
    t.dir("out", 0o755);
    t.dir("in", 0o755);
    let text = format!(
        "[[client]]\nname = \"t\"\nusers = [65534]\n\
         [[client.allow]]\npath = \"{d}/in/\"\n\
         [[client.allow]]\npath = \"{d}/out/\"\naccess = [\"create\"]\nowner = 65534\n",
        d = t.path().display()
    );
    t.file("p.toml", text.as_bytes(), 0o644)
}

fn check(args: &[&std::ffi::OsStr]) -> std::process::Output {
    run_with_timeout(
        Command::new(fdbroker_bin())
            .args(["policy", "check"])
            .args(args),
        Duration::from_secs(60),
    )
}

/// The shipped unit grants only CAP_DAC_READ_SEARCH: a create rule with an owner draws
/// two warnings at that rule, naming the unit's CapabilityBoundingSet= and
/// AmbientCapabilities= lines; a drop-in that adds both capabilities silences them; a
/// read-only policy draws none. `--strict` makes them an error.
#[test]
fn a_capability_the_unit_does_not_grant_is_a_warning_naming_its_lines() {
    let t = TempDir::new("unitcaps");
    let p = policy(&t);
    let shipped = repo_root().join("broker/systemd/fdbroker.service");
    let units = t.dir("units", 0o755);
    let unit = units.join("fdbroker.service");
    std::fs::copy(&shipped, &unit).unwrap();
    let lines: Vec<usize> = std::fs::read_to_string(&unit)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            l.starts_with("CapabilityBoundingSet=") || l.starts_with("AmbientCapabilities=")
        })
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 2, "the shipped unit sets each list once");

    let out = check(&[p.as_os_str(), "--unit".as_ref(), unit.as_os_str()]);
    assert!(out.status.success(), "warnings only: {}", show(&out));
    let err = text(&out.stderr);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains(": warning: ")).collect();
    assert_eq!(warnings.len(), 2, "{err}");
    for (w, cap) in warnings.iter().zip(["CAP_DAC_OVERRIDE", "CAP_CHOWN"]) {
        assert!(
            w.starts_with(&format!("{}:7:", p.display())),
            "at the rule: {w}"
        );
        assert!(w.contains(cap), "{w}");
        for l in &lines {
            assert!(w.contains(&format!("{}:{l}", unit.display())), "{w}");
        }
    }
    let strict = check(&[
        p.as_os_str(),
        "--strict".as_ref(),
        "--unit".as_ref(),
        unit.as_os_str(),
    ]);
    assert_eq!(strict.status.code(), Some(1), "{}", show(&strict));

    // A drop-in that grants both, as `systemctl edit` writes it.
    let d = t.dir("units/fdbroker.service.d", 0o755);
    std::fs::write(
        d.join("caps.conf"),
        "[Service]\nCapabilityBoundingSet=CAP_DAC_OVERRIDE CAP_CHOWN\n\
         AmbientCapabilities=CAP_DAC_OVERRIDE CAP_CHOWN\n",
    )
    .unwrap();
    let out = check(&[p.as_os_str(), "--unit".as_ref(), unit.as_os_str()]);
    assert!(
        out.status.success() && !text(&out.stderr).contains("warning"),
        "{}",
        show(&out)
    );
}

/// A broker started unprivileged without CAP_DAC_OVERRIDE for a create policy refuses
/// to start, and its hint names the bounding, inheritable and ambient sets (with the
/// setpriv options for each) and does not suggest `confine = false`.
#[test]
fn the_missing_capability_error_names_all_three_lists_and_not_confine_false() {
    use std::os::unix::fs::chown;
    let t = TempDir::new("unitcaps");
    let p = policy(&t);
    chown(t.path(), Some(65534), Some(65534)).unwrap();
    let out = run_with_timeout(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all,+dac_read_search",
                "--ambient-caps=+dac_read_search",
                "--bounding-set=-all,+dac_read_search",
            ])
            .arg(fdbroker_bin())
            .args(["serve", "--policy"])
            .arg(&p)
            .arg("--socket")
            .arg(t.join("s.sock")),
        Duration::from_secs(120),
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = text(&out.stderr);
    // Both capabilities the policy needs are named at once, and the hint grants both.
    assert!(
        err.contains("needs CAP_DAC_OVERRIDE") && err.contains("CAP_CHOWN ("),
        "{err}"
    );
    for needed in [
        "bounding set",
        "inheritable set",
        "ambient set",
        "--bounding-set=-all,+dac_read_search,+dac_override,+chown",
        "--inh-caps=-all,+dac_read_search,+dac_override,+chown",
        "--ambient-caps=+dac_read_search,+dac_override,+chown",
        "CapabilityBoundingSet=CAP_DAC_READ_SEARCH CAP_DAC_OVERRIDE CAP_CHOWN",
        "AmbientCapabilities=CAP_DAC_READ_SEARCH CAP_DAC_OVERRIDE CAP_CHOWN",
    ] {
        assert!(err.contains(needed), "{needed}: {err}");
    }
    assert!(!err.contains("confine = false"), "{err}");
    // Doing what the hint says starts the broker: it does not send the operator round.
    let hint = err
        .split("by hand: setpriv ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no setpriv hint: {err}"));
    let socket = t.join("hinted.sock");
    let mut broker = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(hint.split_whitespace())
        .arg(fdbroker_bin())
        .args(["serve", "--policy"])
        .arg(&p)
        .arg("--socket")
        .arg(&socket)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = fdbroker_tests::eventually(Duration::from_secs(60), || {
        socket.exists() || broker.try_wait().ok().flatten().is_some()
    });
    let exited = broker.try_wait().ok().flatten();
    let _ = broker.kill();
    let out = broker.wait_with_output().unwrap();
    assert!(
        started && exited.is_none() && socket.exists(),
        "the broker started as the hint says did not serve ({exited:?}): {}",
        text(&out.stderr)
    );
}
