//! `fdbroker policy suggest` and `fdbroker policy replay`: a policy judged against an
//! audit log (untrusted text, read bounded by [`fdbroker_policy::audit_log`]).

use super::error;
use fdbroker_policy::Policy;
use fdbroker_policy::audit_log::{Evidence, Outcome, Refusal};
use fdbroker_policy::replay::{FlipLine, replay};
use fdbroker_policy::suggest;
use std::io::BufReader;
use std::path::Path;
use std::process::ExitCode;

/// Read an audit log, `-` being stdin.
pub(crate) fn read_log(log: &Path) -> std::io::Result<Evidence> {
    if log == Path::new("-") {
        Evidence::read(std::io::stdin().lock())
    } else {
        Evidence::read(BufReader::new(std::fs::File::open(log)?))
    }
    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", log.display())))
}

/// Say, on stderr, what of the log could not be used.
fn report_reading(ev: &Evidence) {
    if ev.unreadable + ev.skipped + ev.dropped > 0 {
        crate::log::say(&format!(
            "fdbroker: {} decisions read from {} lines; {} unreadable, {} too long or not \
             UTF-8, {} beyond the limit of distinct decisions",
            ev.decisions(),
            ev.lines,
            ev.unreadable,
            ev.skipped,
            ev.dropped
        ));
    }
}

/// `policy suggest --audit LOG [--client NAME] [--policy FILE]`: exit 0, 2 on errors.
pub fn suggest_main(
    log: &Path,
    client: Option<&str>,
    policy: Option<&Path>,
    collapse: usize,
) -> ExitCode {
    let ev = match read_log(log) {
        Ok(ev) => ev,
        Err(e) => return error(e),
    };
    report_reading(&ev);
    // Client names in first-seen order, each with what it needs.
    let mut clients: Vec<(String, Vec<_>)> = Vec::new();
    let mut by_deny = 0u64;
    let mut other = 0u64;
    for (rec, count) in &ev.records {
        if client.is_some_and(|c| c != rec.client) {
            continue;
        }
        let needs = match rec.outcome {
            Outcome::Denied => match rec.refusal {
                Some(Refusal::DenyRule) => {
                    by_deny += count;
                    continue;
                }
                Some(r) if r.a_rule_would_grant() => true,
                Some(Refusal::Other) => {
                    other += count;
                    continue;
                }
                _ => false,
            },
            Outcome::Granted => {
                rec.learn
                    && rec
                        .rule
                        .as_deref()
                        .is_some_and(|r| r.starts_with("learn_scope:"))
            }
            Outcome::Failed => false,
        };
        if !needs {
            continue;
        }
        let slot = match clients.iter().position(|(c, _)| *c == rec.client) {
            Some(i) => &mut clients[i].1,
            None => {
                clients.push((rec.client.clone(), Vec::new()));
                &mut clients.last_mut().expect("just pushed").1
            }
        };
        slot.push((rec.path.clone(), rec.action, *count));
    }
    if by_deny > 0 {
        crate::log::say(&format!(
            "fdbroker: {by_deny} request(s) refused by a deny rule are not suggested: a deny \
             rule always wins"
        ));
    }
    if other > 0 {
        crate::log::say(&format!(
            "fdbroker: {other} request(s) refused for their open flags or for what a directory \
             descriptor would show are not suggested: a rule would not change them"
        ));
    }
    if let (Some(policy), Some(name)) = (policy, client) {
        let text =
            match Policy::read_text(policy).and_then(|t| Policy::parse(&t, policy).map(|_| t)) {
                Ok(t) => t,
                Err(e) => return error(e),
            };
        let needs = clients.into_iter().flat_map(|(_, n)| n);
        let (rules, _) = suggest::suggest(needs, collapse);
        return match suggest::render(&text, name, &rules) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => error(e),
        };
    }
    if clients.is_empty() {
        println!("# no denials to turn into rules");
    }
    for (name, needs) in clients {
        let (rules, unwritable) = suggest::suggest(needs, collapse);
        println!(
            "# client {name:?}: {} rule(s); add them to its [[client]] table after review",
            rules.len()
        );
        print!("{}", suggest::render_fragment(&name, &rules));
        for p in unwritable.paths {
            println!("# cannot be written as a rule: \"{}\"", p.escape_ascii());
        }
    }
    ExitCode::SUCCESS
}

/// `policy replay FILE --audit LOG`: exit 0 no flip, 1 some, 2 on errors.
pub fn replay_main(file: &Path, log: &Path) -> ExitCode {
    let policy = match Policy::load(file) {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    let ev = match read_log(log) {
        Ok(ev) => ev,
        Err(e) => return error(e),
    };
    report_reading(&ev);
    let flips = replay(&policy, &ev);
    for flip in &flips {
        println!(
            "{}",
            FlipLine {
                policy: &policy,
                flip
            }
        );
    }
    let taken = flips
        .iter()
        .filter(|f| f.takes_away())
        .map(|f| f.count)
        .sum::<u64>();
    let given = flips
        .iter()
        .filter(|f| !f.takes_away())
        .map(|f| f.count)
        .sum::<u64>();
    println!(
        "{}: {} decision(s) replayed; {taken} would now be denied, {given} would now be granted",
        file.display(),
        ev.decisions()
    );
    if ev.dropped > 0 {
        // What was dropped may hold a flip: "nothing flips" cannot be said.
        crate::log::say(&format!(
            "fdbroker: {} decision(s) beyond the limit were not replayed: a flip among them \
             cannot be ruled out",
            ev.dropped
        ));
    }
    if flips.is_empty() && ev.dropped == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
