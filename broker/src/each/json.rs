//! Not a process: `fdbroker each`'s output line for one item. Built by serde_json, so
//! whatever bytes a path or a worker's stdout holds (newlines, quotes, control
//! characters, invalid UTF-8) it stays one valid JSON object on one line.

use crate::each::engine::Outcome;
use serde_json::{Map, Value};

/// The line, without its newline. Text fields are UTF-8 with invalid bytes replaced;
/// a path that is not UTF-8 also comes as `path_hex`, so it can be told apart.
pub fn line(o: &Outcome) -> String {
    let mut m = Map::new();
    m.insert("index".into(), o.id.into());
    m.insert(
        "path".into(),
        String::from_utf8_lossy(&o.path).into_owned().into(),
    );
    if std::str::from_utf8(&o.path).is_err() {
        m.insert("path_hex".into(), hex(&o.path).into());
    }
    m.insert("verdict".into(), o.verdict.as_str().into());
    m.insert(
        "exit_status".into(),
        o.exit_status.map_or(Value::Null, Value::from),
    );
    m.insert("signal".into(), o.signal.map_or(Value::Null, Value::from));
    m.insert("wall_ms".into(), o.wall_ms.into());
    m.insert("cpu_ms".into(), o.cpu_ms.into());
    m.insert("max_rss_kib".into(), o.max_rss_kib.into());
    m.insert(
        "stdout".into(),
        String::from_utf8_lossy(&o.stdout).into_owned().into(),
    );
    if let Some(f) = &o.stdout_file {
        m.insert(
            "stdout_file".into(),
            f.to_string_lossy().into_owned().into(),
        );
    }
    if let Some(msg) = &o.message {
        m.insert("message".into(), msg.clone().into());
    }
    Value::Object(m).to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::limits::Verdict;

    #[test]
    fn a_hostile_path_stays_one_line_of_valid_json() {
        let o = Outcome {
            id: 3,
            path: b"/x/a\nb\"\xff".to_vec(),
            verdict: Verdict::Denied,
            exit_status: None,
            signal: None,
            wall_ms: 0,
            cpu_ms: 0,
            max_rss_kib: 0,
            stdout: b"\x00\xfe\n".to_vec(),
            stdout_file: None,
            message: Some("denied".into()),
        };
        let l = line(&o);
        assert!(!l.contains('\n'));
        let v: Value = serde_json::from_str(&l).expect("valid JSON");
        assert_eq!(v["verdict"], "denied");
        assert_eq!(v["path_hex"], "2f782f610a6222ff");
        assert_eq!(v["index"], 3);
    }
}
