//! The x86_64 worker filter as one program that finds a system call's rule by binary
//! search over its number, with `seccompiler`'s program behind it for the calls whose
//! rule reads arguments and for other architectures.
//!
//! Why not `seccompiler`'s program alone: it tests the number against each refused call
//! in turn, and the kernel, when it installs a filter, runs the program once for every
//! system call number of every architecture it supports to learn which calls the filter
//! always allows (the action cache, `seccomp_cache_prepare`, with interrupts off). Over a
//! chain of some 150 tests that is ~250 µs of kernel time per install, measured, and a
//! sandbox is installed per worker (`fdbroker each`: per file; it was a quarter of an
//! item's cost). The search reaches any number's answer in about nine tests, so the
//! cache is built quickly, and the calls it allows then never run the filter at all.
//!
//! The order of the head is the same as before: the x32 range and `clone3` answer
//! `ENOSYS` first. Every jump is forward; a conditional jump skips at most one
//! instruction, long distances are `BPF_JA` (32-bit offsets).

use seccompiler::{BpfProgram, sock_filter};

/// `AUDIT_ARCH_X86_64` from `<linux/audit.h>`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// `__X32_SYSCALL_BIT` from `arch/x86/include/uapi/asm/unistd.h`.
pub(super) const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// What the search answers for a system call number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rule {
    Allow,
    /// Refused with this errno whatever its arguments.
    Refuse(u32),
    /// Decided by the full program (its rule reads arguments).
    Full,
}

/// A jump to the full program, its offset filled in once the search's length is known.
const TO_FULL: u32 = u32::MAX;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn ret(rule: Rule) -> sock_filter {
    match rule {
        Rule::Allow => op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        Rule::Refuse(errno) => op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | errno),
        Rule::Full => op(JA, 0, 0, TO_FULL),
    }
}

/// The program: `rules` for the numbers it names (every other number below the x32 range
/// is allowed), `full` (which checks the architecture itself) for everything else.
pub(super) fn program(rules: &[(u32, Rule)], full: BpfProgram) -> BpfProgram {
    let enosys = Rule::Refuse(libc::ENOSYS as u32);
    let mut p = vec![
        op(LD_W_ABS, 0, 0, DATA_ARCH),
        op(JEQ_K, 1, 0, AUDIT_ARCH_X86_64), // x86_64: skip the jump to the full program
        op(JA, 0, 0, TO_FULL),
        op(LD_W_ABS, 0, 0, DATA_NR),
        op(JGE_K, 0, 1, X32_SYSCALL_BIT), // the x32 range
        ret(enosys),
        op(JEQ_K, 0, 1, libc::SYS_clone3 as u32),
        ret(enosys),
    ];
    p.extend(search(&segments(rules)));
    let full_at = p.len();
    for (i, ins) in p.iter_mut().enumerate() {
        if ins.code == JA && ins.k == TO_FULL {
            ins.k = (full_at - i - 1) as u32;
        }
    }
    p.extend(full);
    p
}

/// The numbers from 0 to the x32 range as runs of one rule each, in order: each named
/// number its own run (neighbours with the same refusal merged), the gaps allowed.
fn segments(rules: &[(u32, Rule)]) -> Vec<(u32, Rule)> {
    let mut sorted: Vec<(u32, Rule)> = rules
        .iter()
        .copied()
        .filter(|(nr, _)| *nr < X32_SYSCALL_BIT)
        .collect();
    sorted.sort_by_key(|(nr, _)| *nr);
    // (start, rule): each run lasts until the next one starts.
    let mut runs: Vec<(u32, Rule)> = Vec::new();
    let mut push = |start: u32, rule: Rule| match runs.last() {
        Some(&(_, last)) if last == rule && rule != Rule::Full => {}
        _ => runs.push((start, rule)),
    };
    let mut next = 0;
    for (nr, rule) in sorted {
        if nr > next {
            push(next, Rule::Allow);
        }
        push(nr, rule);
        next = nr + 1;
    }
    push(next, Rule::Allow);
    runs
}

/// The search over `runs` (the number is in the accumulator): `JGE` the middle run's
/// start, a long jump to the upper half, the lower half, the upper half.
fn search(runs: &[(u32, Rule)]) -> Vec<sock_filter> {
    match runs {
        [] => vec![ret(Rule::Allow)],
        [(_, rule)] => vec![ret(*rule)],
        _ => {
            let mid = runs.len() / 2;
            let lower = search(&runs[..mid]);
            let upper = search(&runs[mid..]);
            let mut p = vec![
                op(JGE_K, 0, 1, runs[mid].0),
                op(JA, 0, 0, lower.len() as u32),
            ];
            p.extend(lower);
            p.extend(upper);
            p
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The seccomp data a test runs a program on.
    pub(crate) struct Data {
        pub(crate) nr: u32,
        pub(crate) arch: u32,
        pub(crate) args: [u64; 6],
    }

    /// Runs a classic BPF program as the kernel's seccomp would, for the instructions
    /// `seccompiler` and this module emit; panics on any other, and on a jump out of the
    /// program or a program that ends without returning.
    pub(crate) fn run(p: &[sock_filter], d: &Data) -> u32 {
        let word = |off: u32| -> u32 {
            match off {
                0 => d.nr,
                4 => d.arch,
                16..=63 => {
                    let arg = d.args[((off - 16) / 8) as usize];
                    if (off - 16) % 8 == 0 {
                        arg as u32
                    } else {
                        (arg >> 32) as u32
                    }
                }
                _ => panic!("load of offset {off}"),
            }
        };
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let ins = p
                .get(pc)
                .unwrap_or_else(|| panic!("pc {pc} past {}", p.len()));
            pc += 1;
            let class = u32::from(ins.code) & 0x07;
            let code = u32::from(ins.code);
            if code == u32::from(LD_W_ABS) {
                a = word(ins.k);
            } else if class == libc::BPF_RET {
                return ins.k;
            } else if code == (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) {
                a &= ins.k;
            } else if code == u32::from(JA) {
                pc += ins.k as usize;
            } else if class == libc::BPF_JMP && code & 0x08 == libc::BPF_K {
                let taken = match code & 0xf0 {
                    libc::BPF_JEQ => a == ins.k,
                    libc::BPF_JGE => a >= ins.k,
                    libc::BPF_JGT => a > ins.k,
                    libc::BPF_JSET => a & ins.k != 0,
                    other => panic!("jump op {other:#x}"),
                };
                pc += usize::from(if taken { ins.jt } else { ins.jf });
            } else {
                panic!("instruction {:#x} at {}", ins.code, pc - 1);
            }
        }
    }

    #[test]
    fn the_search_answers_every_number_as_its_rule_says() {
        let rules = [
            (0, Rule::Refuse(1)),
            (1, Rule::Refuse(1)),
            (5, Rule::Full),
            (6, Rule::Full),
            (7, Rule::Refuse(1)),
            (300, Rule::Refuse(38)),
            (1000, Rule::Refuse(1)),
        ];
        // The full program refuses everything with a mark of its own.
        let full = vec![op(RET_K, 0, 0, 0x7777)];
        let p = program(&rules, full);
        let rule_of = |nr: u32| {
            rules
                .iter()
                .find(|r| r.0 == nr)
                .map_or(Rule::Allow, |r| r.1)
        };
        for nr in (0..1100).chain([X32_SYSCALL_BIT - 1]) {
            let d = Data {
                nr,
                arch: AUDIT_ARCH_X86_64,
                args: [0; 6],
            };
            let want = match rule_of(nr) {
                _ if nr == libc::SYS_clone3 as u32 => libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
                Rule::Allow => libc::SECCOMP_RET_ALLOW,
                Rule::Refuse(e) => libc::SECCOMP_RET_ERRNO | e,
                Rule::Full => 0x7777,
            };
            assert_eq!(run(&p, &d), want, "nr {nr}");
        }
        for nr in [X32_SYSCALL_BIT, X32_SYSCALL_BIT + 5, u32::MAX] {
            let d = Data {
                nr,
                arch: AUDIT_ARCH_X86_64,
                args: [0; 6],
            };
            assert_eq!(run(&p, &d), libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
        }
        // Another architecture: the full program, whatever the number.
        for nr in [0, 7, 300, 435] {
            let d = Data {
                nr,
                arch: 0x4000_0003,
                args: [0; 6],
            };
            assert_eq!(run(&p, &d), 0x7777);
        }
    }

    #[test]
    fn every_jump_is_forward_and_lands_inside_the_program() {
        let rules: Vec<(u32, Rule)> = (0..200).map(|n| (n * 3, Rule::Refuse(1))).collect();
        let p = program(&rules, vec![op(RET_K, 0, 0, 0)]);
        for (i, ins) in p.iter().enumerate() {
            if u32::from(ins.code) & 0x07 == libc::BPF_JMP {
                let offsets = if ins.code == JA {
                    vec![ins.k as usize]
                } else {
                    vec![usize::from(ins.jt), usize::from(ins.jf)]
                };
                for off in offsets {
                    assert!(i + 1 + off < p.len(), "jump from {i} by {off}");
                }
            }
        }
        // About log2(runs) tests deep: a number never walks the list.
        assert!(p.len() < 4 * 400 + 20, "{}", p.len());
    }
}
