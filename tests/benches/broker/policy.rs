//! Generated policies and the decision-time benchmark.
//!
//! Rules come in groups of ten per "tenant" directory `BASE/tNNNNN/`, the shape of a
//! real multi-service policy: every group has a spool subtree (read, directory) with a
//! denied `keys/` carve-out, four exact config files, a `conf.d/*.conf` glob, a
//! `logs/**/*.log` glob, a cache subtree and an exact pid file. The mix is therefore
//! 50% exact, 20% glob, 30% subtree (a third of those deny rules), spread over
//! `rules / 10` prefixes.

use fdbroker_policy::{Access, ClientId, Policy};
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

pub const MIX: &str = "50% exact, 20% glob, 30% subtree (10% deny), one prefix per 10 rules";

/// The `[[client.allow]]`/`[[client.deny]]` tables of an `n`-rule policy under `base`.
pub fn rule_tables(n: usize, base: &str) -> String {
    assert!(
        n > 0 && n % 10 == 0,
        "rule count must be a multiple of 10, got {n}"
    );
    let mut s = String::with_capacity(n * 80);
    for i in 0..n {
        let t = format!("{base}/t{:05}", i / 10);
        let (kind, path, access) = match i % 10 {
            0 => ("allow", format!("{t}/spool/"), r#"["read", "directory"]"#),
            1 => ("deny", format!("{t}/spool/keys/"), ""),
            k @ 2..=5 => ("allow", format!("{t}/etc/app{k}.conf"), r#"["read"]"#),
            6 => ("allow", format!("{t}/conf.d/*.conf"), r#"["read"]"#),
            7 => ("allow", format!("{t}/logs/**/*.log"), r#"["read"]"#),
            8 => (
                "allow",
                format!("{t}/cache/"),
                r#"["read", "write", "create"]"#,
            ),
            _ => ("allow", format!("{t}/run/app.pid"), r#"["read"]"#),
        };
        s.push_str(&format!("\n  [[client.{kind}]]\n  path = \"{path}\"\n"));
        if !access.is_empty() {
            s.push_str(&format!("  access = {access}\n"));
        }
    }
    s
}

/// The directories the rules of tenant `t` name, so a broker can open their roots.
pub fn tenant_dirs(t: usize) -> Vec<String> {
    [
        "spool",
        "spool/keys",
        "etc",
        "conf.d",
        "logs",
        "cache",
        "run",
    ]
    .iter()
    .map(|d| format!("t{t:05}/{d}"))
    .collect()
}

/// A full one-client policy text (client `scanner`, uid 0).
pub fn policy_text(n: usize, base: &str, broker_table: &str) -> String {
    format!(
        "[broker]\n{broker_table}\n[[client]]\nname = \"scanner\"\nusers = [0]\n{}",
        rule_tables(n, base)
    )
}

/// Request paths of the same shapes for any policy size: per query a tenant and one
/// of nine shapes (six granted, three denied: carve-out, no rule, outside every root).
fn queries(n: usize, base: &str, count: usize) -> Vec<Vec<u8>> {
    let tenants = n / 10;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        // xorshift64: deterministic, spreads the tenants over the whole index.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count)
        .map(|_| {
            let t = format!("{base}/t{:05}", next() as usize % tenants);
            let p = match next() % 9 {
                0 => format!("{t}/spool/in/sample.bin"),
                1 => format!("{t}/spool/keys/private.pem"),
                2 => format!("{t}/etc/app3.conf"),
                3 => format!("{t}/etc/passwd"),
                4 => format!("{t}/conf.d/scan.conf"),
                5 => format!("{t}/logs/2024/01/scan.log"),
                6 => format!("{t}/cache/ab/cd.bin"),
                7 => format!("{t}/run/app.pid"),
                _ => "/home/user/documents/report.pdf".to_owned(),
            };
            p.into_bytes()
        })
        .collect()
}

pub struct PolicyBench {
    policy: Policy,
    client: ClientId,
    queries: Vec<Vec<u8>>,
    pub rules: usize,
    pub allowed: usize,
}

impl PolicyBench {
    pub fn new(n: usize) -> PolicyBench {
        let base = "/srv/fdbroker-bench";
        let policy = Policy::parse(&policy_text(n, base, ""), Path::new("bench.toml"))
            .unwrap_or_else(|e| panic!("generated {n}-rule policy does not load: {e}"));
        let client = policy
            .client_for(0, 0)
            .expect("the bench policy serves uid 0");
        let queries = queries(n, base, 4096);
        let allowed = queries
            .iter()
            .filter(|q| policy.decide(client, q, Access::Read).is_allow())
            .count();
        PolicyBench {
            policy,
            client,
            queries,
            rules: n,
            allowed,
        }
    }

    /// Mean nanoseconds per `Policy::decide` over `iters` decisions.
    pub fn time(&self, iters: usize) -> f64 {
        let start = Instant::now();
        let mut allowed = 0usize;
        for q in self.queries.iter().cycle().take(iters) {
            let d = self.policy.decide(self.client, black_box(q), Access::Read);
            allowed += usize::from(black_box(d).is_allow());
        }
        black_box(allowed);
        start.elapsed().as_nanos() as f64 / iters as f64
    }
}
