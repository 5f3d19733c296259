//! Drives `fdbroker::each::Engine` as an embedding service would, single-threaded:
//! `each-probe POLICY QUEUE FILE...` submits each FILE as an already-open descriptor
//! and, after them, each FILE again as a path, all for `cat`; prints one line per
//! outcome (`id verdict stdout-bytes`) and `refused N` for the submits the bounded
//! queue gave back before a step made room.
#![allow(clippy::unwrap_used)]

use fdbroker::each::{Config, Engine, Input, Job};
use std::os::fd::OwnedFd;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let queue: usize = args[1].parse().unwrap();
    let files = &args[2..];
    let mut engine = Engine::new(&Config {
        policy: args[0].clone().into(),
        client: None,
        limits: fdbroker_policy::Limits::default(),
        jobs: 1,
        queue,
        stdout_dir: None,
    })
    .unwrap();
    let mut jobs = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let fd = OwnedFd::from(std::fs::File::open(f).unwrap());
        jobs.push(Job {
            id: i as u64,
            input: Input::Descriptor {
                fd,
                name: f.as_bytes().to_vec(),
            },
            program: vec!["cat".into()],
        });
    }
    for (i, f) in files.iter().enumerate() {
        jobs.push(Job {
            id: (files.len() + i) as u64,
            input: Input::Path(f.as_bytes().to_vec()),
            program: vec!["cat".into()],
        });
    }
    let mut refused = 0;
    let mut outcomes = Vec::new();
    let mut pending = jobs.into_iter().peekable();
    while pending.peek().is_some() || !engine.is_idle() {
        while let Some(job) = pending.next() {
            if let Err(job) = engine.submit(job) {
                refused += 1;
                pending = std::iter::once(job)
                    .chain(pending)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .peekable();
                break;
            }
        }
        let (done, _) = engine.step(None).unwrap();
        outcomes.extend(done);
    }
    outcomes.sort_by_key(|o| o.id);
    for o in outcomes {
        println!(
            "{} {} {}",
            o.id,
            o.verdict,
            String::from_utf8_lossy(&o.stdout).trim()
        );
    }
    println!("refused {}", usize::from(refused > 0));
}
