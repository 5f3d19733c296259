//! The documentation is part of the product, so it is tested like code: the committed
//! manual pages are exactly what their sources render to, every relative link in the
//! repository's Markdown resolves, and README.md stays a few screens long.
//!
//! `fdbroker(8)` and its subcommands' pages are rendered from the clap definitions
//! (`fdbroker::cli::Cli`), so `--help` and the manual cannot drift apart; `fdbroker-policy(5)`
//! is rendered from `docs/policy.md` by the small Markdown-to-roff converter below, so the
//! reference is written once. A stale page fails with the command that rewrites it:
//! `FDBROKER_BLESS=1 cargo test -p fdbroker-tests --test docs`.

use clap::CommandFactory;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// README.md's budget: what it is, the picture, the threat model, the two commands, a
/// small policy and links. Everything else has a page in docs/.
const README_MAX_LINES: usize = 200;

/// The manual the pages belong to, in their title line.
const MANUAL: &str = "fdbroker manual";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

fn blessing() -> bool {
    std::env::var_os("FDBROKER_BLESS").is_some_and(|v| v == "1")
}

fn source() -> String {
    format!("fdbroker {}", env!("CARGO_PKG_VERSION"))
}

// ---------------------------------------------------------------------------------------
// Manual pages
// ---------------------------------------------------------------------------------------

/// Every page clap_mangen renders for the command line: `fdbroker.8` and one page per
/// subcommand (`fdbroker-serve.8`, `fdbroker-policy-check.8`, ...), as `git` and `cargo`
/// ship theirs, so `man fdbroker-run` shows exactly `fdbroker run --help`.
fn cli_pages() -> BTreeMap<String, Vec<u8>> {
    fn render(cmd: clap::Command, pages: &mut BTreeMap<String, Vec<u8>>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            render(sub, pages);
        }
        let see_also = see_also(&cmd);
        let man = clap_mangen::Man::new(cmd)
            .section("8")
            // An empty date is written as no argument at all, which would shift the
            // source and the manual into the wrong fields of `.TH`; a blank one is
            // quoted. The pages carry the version instead of a date.
            .date(" ")
            .source(source())
            .manual(MANUAL);
        let mut out = Vec::new();
        man.render(&mut out)
            .expect("rendering into memory cannot fail");
        out.extend_from_slice(see_also.as_bytes());
        pages.insert(man.get_filename(), out);
    }
    // The version alone: `--version`'s commit would make every commit change the pages.
    let mut cmd = fdbroker::cli::Cli::command()
        .disable_help_subcommand(true)
        .long_version(env!("CARGO_PKG_VERSION"));
    // Building names every subcommand by its full path (`fdbroker-policy-check`).
    cmd.build();
    let mut pages = BTreeMap::new();
    render(cmd, &mut pages);
    pages
}

/// A SEE ALSO section: the parent command's page, the subcommands' and the policy file's.
fn see_also(cmd: &clap::Command) -> String {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let mut pages = Vec::new();
    if let Some((parent, _)) = name.rsplit_once('-') {
        pages.push(format!("{parent}(8)"));
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.push(format!(
            "{}(8)",
            sub.get_display_name().unwrap_or_else(|| sub.get_name())
        ));
    }
    pages.push("fdbroker-policy(5)".to_owned());
    let pages: Vec<String> = pages
        .iter()
        .map(|p| format!(r"\fB{}\fR", escape(p)))
        .collect();
    format!(
        ".SH \"SEE ALSO\"\n{}\n.PP\nThe documentation in the source tree: \\fBdocs/README.md\\fR.\n",
        pages.join(", ")
    )
}

/// `fdbroker-policy.5`, from the policy reference.
fn policy_page() -> Vec<u8> {
    let markdown = std::fs::read_to_string(root().join("docs/policy.md"))
        .expect("docs/policy.md is the policy reference");
    markdown_to_roff(
        &markdown,
        "FDBROKER-POLICY",
        "5",
        "fdbroker-policy \\- the policy file of fdbroker(8)",
    )
    .into_bytes()
}

/// Compares (or, blessing, writes) every page under docs/man/, and fails on a page there
/// that nothing renders any more (a removed subcommand's).
fn check_pages(expected: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let dir = root().join("docs/man");
    let mut problems = Vec::new();
    if blessing() {
        std::fs::create_dir_all(&dir).expect("create docs/man");
    }
    for (name, bytes) in expected {
        let path = dir.join(name);
        if blessing() {
            std::fs::write(&path, bytes)
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            continue;
        }
        match std::fs::read(&path) {
            Ok(committed) if committed == *bytes => {}
            Ok(committed) => problems.push(format!(
                "docs/man/{name} is stale (first difference at line {})",
                first_different_line(&committed, bytes)
            )),
            Err(e) => problems.push(format!("docs/man/{name} is missing: {e}")),
        }
    }
    let present = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<BTreeSet<_>>()
        })
        .unwrap_or_default();
    for name in present {
        if !expected.contains_key(&name) {
            if blessing() {
                let _ = std::fs::remove_file(dir.join(&name));
            } else {
                problems.push(format!(
                    "docs/man/{name} is rendered by nothing (remove it)"
                ));
            }
        }
    }
    problems
}

fn first_different_line(a: &[u8], b: &[u8]) -> usize {
    let mut line = 1;
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return line;
        }
        if *x == b'\n' {
            line += 1;
        }
    }
    line
}

#[test]
fn manual_pages_are_current() {
    let mut expected = cli_pages();
    expected.insert("fdbroker-policy.5".to_owned(), policy_page());
    assert!(
        expected.contains_key("fdbroker.8") && expected.contains_key("fdbroker-serve.8"),
        "clap_mangen named the pages {:?}",
        expected.keys().collect::<Vec<_>>()
    );
    let problems = check_pages(&expected);
    assert!(
        problems.is_empty(),
        "{}\nThe manual pages are generated: run\n  FDBROKER_BLESS=1 cargo test -p fdbroker-tests --test docs\n\
         and commit docs/man/.",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Markdown to roff, for the subset docs/policy.md uses
// ---------------------------------------------------------------------------------------

/// Renders `markdown` as a man page: `#` is the page itself (its NAME is `name`), `##` a
/// section, `###` a subsection; paragraphs, fenced code blocks, `-` lists, pipe tables
/// (through tbl), and inline code, bold and links (their text only).
fn markdown_to_roff(markdown: &str, title: &str, section: &str, name: &str) -> String {
    let mut out = String::new();
    // Asks man(1) to run the table preprocessor.
    out.push_str("'\\\" t\n");
    let _ = writeln!(
        out,
        ".TH {title} {section} \" \" \"{}\" \"{MANUAL}\"",
        source()
    );
    out.push_str(".SH NAME\n");
    out.push_str(name);
    // What comes before the first `##` describes the page.
    out.push_str("\n.SH DESCRIPTION\n");
    let lines: Vec<&str> = markdown.lines().collect();
    let mut i = 0;
    let mut paragraph: Vec<&str> = Vec::new();
    let flush = |paragraph: &mut Vec<&str>, out: &mut String| {
        if !paragraph.is_empty() {
            out.push_str(".PP\n");
            out.push_str(&inline(&paragraph.join(" ")));
            out.push('\n');
            paragraph.clear();
        }
    };
    while i < lines.len() {
        let line = lines[i];
        if line.starts_with("```") {
            flush(&mut paragraph, &mut out);
            out.push_str(".PP\n.RS 4\n.nf\n");
            i += 1;
            while i < lines.len() && !lines[i].starts_with("```") {
                out.push_str(&literal(lines[i]));
                out.push('\n');
                i += 1;
            }
            out.push_str(".fi\n.RE\n");
            i += 1;
            continue;
        }
        // Outside the subset: refuse rather than render it as a plain paragraph.
        let unsupported = line.starts_with("####")
            || line.starts_with('>')
            || line.starts_with("* ")
            || line.starts_with('<')
            || line
                .split_once(". ")
                .is_some_and(|(n, _)| n.parse::<u32>().is_ok());
        assert!(
            !unsupported,
            "docs/policy.md uses Markdown the manual page converter does not handle: {line:?}"
        );
        if let Some(h) = line.strip_prefix("### ") {
            flush(&mut paragraph, &mut out);
            let _ = writeln!(out, ".SS \"{}\"", plain(h));
        } else if let Some(h) = line.strip_prefix("## ") {
            flush(&mut paragraph, &mut out);
            let _ = writeln!(out, ".SH \"{}\"", plain(h).to_uppercase());
        } else if line.starts_with("# ") {
            // The page's own title: already the .TH and NAME lines.
            flush(&mut paragraph, &mut out);
        } else if line.starts_with('|') {
            flush(&mut paragraph, &mut out);
            let start = i;
            while i < lines.len() && lines[i].starts_with('|') {
                i += 1;
            }
            table(&lines[start..i], &mut out);
            continue;
        } else if let Some(item) = line.strip_prefix("- ") {
            flush(&mut paragraph, &mut out);
            let mut text = vec![item];
            i += 1;
            while i < lines.len() && lines[i].starts_with("  ") && !lines[i].trim().is_empty() {
                text.push(lines[i].trim());
                i += 1;
            }
            out.push_str(".IP \\(bu 2\n");
            out.push_str(&inline(&text.join(" ")));
            out.push('\n');
            continue;
        } else if line.trim().is_empty() {
            flush(&mut paragraph, &mut out);
        } else {
            paragraph.push(line.trim());
        }
        i += 1;
    }
    flush(&mut paragraph, &mut out);
    out
}

/// A pipe table as tbl input; the second row is Markdown's alignment row.
fn table(rows: &[&str], out: &mut String) {
    let cells = |row: &str| -> Vec<String> {
        let row = row.trim().trim_start_matches('|').trim_end_matches('|');
        split_cells(row)
            .iter()
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let header = cells(rows[0]);
    let columns = header.len();
    out.push_str(".PP\n.TS\nallbox tab(\u{1f});\n");
    out.push_str(&vec!["lb"; columns].join(" "));
    out.push('\n');
    // Short columns as they are; the last, the prose, fills the line and wraps.
    let mut body_format = vec!["l"; columns];
    body_format[columns - 1] = "lx";
    out.push_str(&body_format.join(" "));
    out.push_str(".\n");
    let body = rows.iter().skip(2).map(|r| cells(r));
    for row in std::iter::once(header).chain(body) {
        let text: Vec<String> = (0..columns)
            .map(|c| {
                let cell = inline(row.get(c).map_or("", String::as_str));
                if c + 1 == columns {
                    format!("T{{\n{cell}\nT}}")
                } else {
                    cell
                }
            })
            .collect();
        out.push_str(&text.join("\u{1f}"));
        out.push('\n');
    }
    out.push_str(".TE\n");
}

/// Splits a table row at `|` outside inline code.
fn split_cells(row: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut code = false;
    for c in row.chars() {
        if c == '|' && !code {
            cells.push(std::mem::take(&mut cell));
            continue;
        }
        if c == '`' {
            code = !code;
        }
        cell.push(c);
    }
    cells.push(cell);
    cells
}

/// Escapes text for roff: backslashes, and hyphens (so options stay ASCII).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            _ => out.push(c),
        }
    }
    out
}

/// A whole output line: a `.` or `'` at its start would make it a request.
fn line_start(mut line: String) -> String {
    if line.starts_with('.') || line.starts_with('\'') {
        line.insert_str(0, "\\&");
    }
    line
}

/// A code block line: escaped, never taken for a request.
fn literal(line: &str) -> String {
    line_start(escape(line))
}

/// Inline Markdown to roff: `code` and **bold** in bold, [text](link) as its text.
fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('`') {
            if let Some(end) = after.find('`') {
                let _ = write!(out, "\\fB{}\\fR", escape(&after[..end]));
                rest = &after[end + 1..];
                continue;
            }
        }
        if let Some(after) = rest.strip_prefix("**") {
            if let Some(end) = after.find("**") {
                let _ = write!(out, "\\fB{}\\fR", inline(&after[..end]));
                rest = &after[end + 2..];
                continue;
            }
        }
        if let Some(after) = rest.strip_prefix('[') {
            if let Some(close) = after.find("](") {
                if let Some(end) = after[close + 2..].find(')') {
                    out.push_str(&inline(&after[..close]));
                    rest = &after[close + 2 + end + 1..];
                    continue;
                }
            }
        }
        let first = rest.chars().next().map_or(1, char::len_utf8);
        let next = rest[first..]
            .find(['`', '*', '['])
            .map_or(rest.len(), |n| n + first);
        out.push_str(&escape(&rest[..next]));
        rest = &rest[next..];
    }
    line_start(out)
}

/// A heading's text without its Markdown, escaped, for a quoted macro argument.
fn plain(text: &str) -> String {
    text.replace(['`', '*'], "")
        .replace('"', "'")
        .replace('-', "\\-")
}

#[test]
fn converter_handles_its_subset() {
    let md = "# t\n\n## Keys and `values`\n\nA `--flag` and **bold**, [a link](x.md).\n.dot\n\n\
              ```toml\n.x = \"\\\\\"\n```\n\n- one\n  two\n\n| a | b |\n| --- | --- |\n| `x|y` | z |\n";
    let roff = markdown_to_roff(md, "T", "5", "t \\- test");
    assert!(roff.contains(".SH \"KEYS AND VALUES\"\n"), "{roff}");
    assert!(
        roff.contains("A \\fB\\-\\-flag\\fR and \\fBbold\\fR, a link. .dot\n"),
        "{roff}"
    );
    assert!(roff.contains(".nf\n\\&.x = \"\\e\\e\"\n.fi\n"), "{roff}");
    assert!(roff.contains(".IP \\(bu 2\none two\n"), "{roff}");
    assert!(roff.contains("\\fBx|y\\fR\u{1f}T{\nz\nT}\n"), "{roff}");
}

// ---------------------------------------------------------------------------------------
// Links
// ---------------------------------------------------------------------------------------

/// Folders whose Markdown is not the repository's own.
const SKIPPED_DIRS: [&str; 6] = [
    "target",
    "node_modules",
    "venv",
    "build",
    "dist",
    "__pycache__",
];

/// Every Markdown file of the repository, outside build output and hidden folders.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            // Build output and environments hold other projects' Markdown.
            if name.starts_with('.') || SKIPPED_DIRS.contains(&name.as_ref()) {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, out);
            } else if name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root(), &mut files);
    files.sort();
    files
}

/// Inline links `[text](target)` outside code, with their line numbers.
fn links(markdown: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut fenced = false;
    for (n, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Inline code can hold brackets that are not links.
        let mut text = String::new();
        for (k, part) in line.split('`').enumerate() {
            if k % 2 == 0 {
                text.push_str(part);
            }
            text.push(' ');
        }
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or("");
            found.push((n + 1, target.to_owned()));
            rest = &after[end..];
        }
    }
    found
}

/// GitHub's anchors for a file's headings: lower case, punctuation dropped, spaces as
/// hyphens, a repeated heading numbered.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let heading = line.trim_start_matches('#').trim();
        let mut slug = String::new();
        for c in heading.chars() {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                slug.extend(c.to_lowercase());
            } else if c == ' ' {
                slug.push('-');
            }
        }
        let count = seen.entry(slug.clone()).or_insert(0);
        if *count == 0 {
            out.insert(slug.clone());
        } else {
            out.insert(format!("{slug}-{count}"));
        }
        *count += 1;
    }
    out
}

fn broken_links() -> Vec<String> {
    let root = root();
    let mut broken = Vec::new();
    for file in markdown_files() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for (line, target) in links(&text) {
            if target.is_empty()
                || target.contains("://")
                || target.starts_with("mailto:")
                || target.starts_with('<')
            {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap_or(&root).join(path)
            };
            if !resolved.exists() {
                broken.push(format!("{shown}:{line}: {target}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                if resolved.extension().is_some_and(|e| e == "md") {
                    let target_text = std::fs::read_to_string(&resolved).unwrap_or_default();
                    if !anchors(&target_text).contains(anchor) {
                        broken.push(format!("{shown}:{line}: {target}: no heading #{anchor}"));
                    }
                }
            }
        }
    }
    broken
}

#[test]
fn relative_links_resolve() {
    let files = markdown_files();
    for expected in [
        "README.md",
        "CHANGELOG.md",
        "docs/README.md",
        "shared/PROTOCOL.md",
    ] {
        assert!(
            files.contains(&root().join(expected)),
            "{expected} was not among the files checked: {files:?}"
        );
    }
    let broken = broken_links();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn link_check_can_fail() {
    let md = "See [a](missing.md), [b](#nowhere), [c](#a-heading) and `[d](in-code.md)`.\n\n# A heading\n";
    let found = links(md);
    assert_eq!(
        found.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(),
        ["missing.md", "#nowhere", "#a-heading"]
    );
    let a = anchors(md);
    assert!(a.contains("a-heading") && !a.contains("nowhere"));
    let dup = anchors("# Two\n## Two\n### What it answers, and how\n");
    assert!(
        dup.contains("two") && dup.contains("two-1") && dup.contains("what-it-answers-and-how")
    );
}

// ---------------------------------------------------------------------------------------
// README
// ---------------------------------------------------------------------------------------

#[test]
fn readme_fits_on_a_few_screens() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, at most {README_MAX_LINES}: move the detail into a page of docs/ and link it"
    );
    for words in ["scripts/demo.sh", "scripts/test.sh", "cargo test"] {
        assert!(readme.contains(words), "README.md no longer says {words:?}");
    }
}
