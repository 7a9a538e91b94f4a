//! The documentation cannot drift from the code.
//!
//! - Every `hefl ...` command line in the Markdown files (README.md, docs/**, the other
//!   READMEs), in code blocks and inline code, names a subcommand and flags that the CLI has:
//!   checked against clap's command tree, which `hefl __cli-tree` prints as JSON, not against
//!   `--help` text. `hefl`, `target/release/hefl` and `cargo run [--release] -- ...` count,
//!   after environment assignments (`MNIST_DIR=... hefl demo`), `nice` or `time`; `\`
//!   continues a line, and so does a synopsis line that starts with `[`, `(` or `-`.
//!   Inline code that is only flags (`--round-timeout` [30s]) must name flags some command
//!   has; another tool's flag is written with its command (`cargo fuzz build --sanitizer none`).
//! - Every relative link points at a file or folder that exists, and at a heading of it
//!   when it names one (`docs/dp.md#two-accountants-pld-default-and-rdp`).
//! - Every `docs/....md` path that a source file names exists.
//! - The README stays short, and `.ci/run` runs exactly its test command.

use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::util::hefl;

/// The Markdown files whose commands and links are checked, relative to the repository.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![
        PathBuf::from("README.md"),
        PathBuf::from("keys/README.md"),
        PathBuf::from("hefl-py/README.md"),
    ];
    let mut docs = Vec::new();
    walk(&root().join("docs"), &mut docs);
    docs.retain(|p| p.extension().is_some_and(|e| e == "md"));
    docs.sort();
    files.extend(docs.into_iter().map(|p| relative(&p)));
    files
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn relative(path: &Path) -> PathBuf {
    path.strip_prefix(root()).unwrap_or(path).to_path_buf()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(root().join(path))
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// --- The command tree, as `hefl __cli-tree` prints it ----------------------------------------

/// One command of the CLI (the fields of `src/cli/tree.rs`).
#[derive(Deserialize)]
struct Node {
    name: String,
    aliases: Vec<String>,
    flags: Vec<Flag>,
    subcommands: Vec<Node>,
}

/// One flag of a command.
#[derive(Deserialize)]
struct Flag {
    long: Option<String>,
    long_aliases: Vec<String>,
    short: Option<char>,
    short_aliases: Vec<char>,
    takes_value: bool,
}

impl Node {
    fn long(&self, name: &str) -> Option<&Flag> {
        self.flags
            .iter()
            .find(|f| f.long.as_deref() == Some(name) || f.long_aliases.iter().any(|a| a == name))
    }

    fn short(&self, c: char) -> Option<&Flag> {
        self.flags
            .iter()
            .find(|f| f.short == Some(c) || f.short_aliases.contains(&c))
    }

    fn subcommand(&self, name: &str) -> Option<&Node> {
        self.subcommands
            .iter()
            .find(|s| s.name == name || s.aliases.iter().any(|a| a == name))
    }
}

fn cli_tree() -> Node {
    let out = hefl(&["__cli-tree"], &root());
    assert!(
        out.status.success(),
        "hefl __cli-tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("hefl __cli-tree prints the command tree as JSON")
}

// --- Reading Markdown: code blocks, inline code, links, headings -----------------------------

/// A Markdown file split into what is code and what is prose.
struct Markdown {
    /// Code blocks (fenced or indented), each a list of (line number, line).
    blocks: Vec<Vec<(usize, String)>>,
    /// Inline code spans of the prose: (line number, text, newlines as spaces).
    spans: Vec<(usize, String)>,
    /// Link targets of the prose: (line number, target).
    links: Vec<(usize, String)>,
    /// Headings, in order.
    headings: Vec<String>,
}

fn fence_of(line: &str) -> Option<(char, usize)> {
    let trimmed = line.trim_start();
    let c = trimmed.chars().next()?;
    if c != '`' && c != '~' {
        return None;
    }
    let n = trimmed.chars().take_while(|&x| x == c).count();
    (n >= 3).then_some((c, n))
}

fn is_indented_code(line: &str) -> bool {
    line.starts_with("    ") || line.starts_with('\t')
}

fn parse_markdown(text: &str) -> Markdown {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    // The prose, with every code line blanked so that line numbers stay.
    let mut prose: Vec<String> = Vec::with_capacity(lines.len());
    let mut headings = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some((c, n)) = fence_of(line) {
            let mut block = Vec::new();
            prose.push(String::new());
            i += 1;
            while i < lines.len() {
                let closing = fence_of(lines[i])
                    .is_some_and(|(c2, n2)| c2 == c && n2 >= n && lines[i].trim().len() == n2);
                prose.push(String::new());
                if closing {
                    break;
                }
                block.push((i + 1, lines[i].to_owned()));
                i += 1;
            }
            i += 1;
            blocks.push(block);
            continue;
        }
        let after_blank = i == 0 || lines[i - 1].trim().is_empty();
        if after_blank && is_indented_code(line) && !line.trim().is_empty() {
            let mut block = Vec::new();
            while i < lines.len() && (is_indented_code(lines[i]) || lines[i].trim().is_empty()) {
                block.push((i + 1, lines[i].to_owned()));
                prose.push(String::new());
                i += 1;
            }
            blocks.push(block);
            continue;
        }
        if line.starts_with('#') {
            let level = line.chars().take_while(|&c| c == '#').count();
            if level <= 6 && line[level..].starts_with(' ') {
                headings.push(line[level..].trim().trim_end_matches('#').trim().to_owned());
            }
        }
        prose.push(line.to_owned());
        i += 1;
    }
    let (spans, without_code) = inline_code(&prose);
    let links = links(&without_code);
    Markdown {
        blocks,
        spans,
        links,
        headings,
    }
}

/// The inline code spans of the prose, and the prose with every span blanked out.
fn inline_code(prose: &[String]) -> (Vec<(usize, String)>, Vec<String>) {
    let mut spans = Vec::new();
    let mut blanked: Vec<String> = prose.to_vec();
    // Spans do not cross paragraphs: scan one paragraph at a time.
    let mut start = 0;
    while start < prose.len() {
        let mut end = start;
        while end < prose.len() && !prose[end].trim().is_empty() {
            end += 1;
        }
        if end > start {
            let paragraph: Vec<char> = prose[start..end].join("\n").chars().collect();
            let mut line_of = Vec::with_capacity(paragraph.len());
            let mut line = start;
            for &c in &paragraph {
                line_of.push(line);
                if c == '\n' {
                    line += 1;
                }
            }
            let mut out = paragraph.clone();
            let mut k = 0;
            while k < paragraph.len() {
                if paragraph[k] != '`' {
                    k += 1;
                    continue;
                }
                let n = paragraph[k..].iter().take_while(|&&c| c == '`').count();
                // The closing run: exactly n backticks.
                let mut j = k + n;
                let mut close = None;
                while j < paragraph.len() {
                    if paragraph[j] == '`' {
                        let m = paragraph[j..].iter().take_while(|&&c| c == '`').count();
                        if m == n {
                            close = Some(j);
                            break;
                        }
                        j += m;
                    } else {
                        j += 1;
                    }
                }
                match close {
                    Some(j) => {
                        let content: String = paragraph[k + n..j]
                            .iter()
                            .map(|&c| if c == '\n' { ' ' } else { c })
                            .collect();
                        spans.push((line_of[k] + 1, content.trim().to_owned()));
                        for c in &mut out[k..j + n] {
                            if *c != '\n' {
                                *c = ' ';
                            }
                        }
                        k = j + n;
                    }
                    None => k += n,
                }
            }
            let text: String = out.into_iter().collect();
            for (offset, l) in text.split('\n').enumerate() {
                blanked[start + offset] = l.to_owned();
            }
        }
        start = end + 1;
    }
    (spans, blanked)
}

/// Link and image targets of the prose: `[text](target)`, `![alt](target)`, `[label]: target`.
fn links(prose: &[String]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in prose.iter().enumerate() {
        let trimmed = line.trim_start();
        // A reference definition: the label's first `]` is followed by `:`.
        if let Some(label) = trimmed.strip_prefix('[')
            && let Some(target) = label.split_once(']').and_then(|(_, r)| r.strip_prefix(':'))
        {
            let target = target.split_whitespace().next().unwrap_or("");
            found.push((n + 1, target.to_owned()));
            continue;
        }
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            // The target ends at the parenthesis that closes this one.
            let mut depth = 0usize;
            let mut end = after.len();
            for (k, c) in after.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => {
                        end = k;
                        break;
                    }
                    ')' => depth -= 1,
                    _ => {}
                }
            }
            let inside = after[..end].trim();
            let target = inside
                .strip_prefix('<')
                .and_then(|t| t.split('>').next())
                .unwrap_or_else(|| inside.split_whitespace().next().unwrap_or(""));
            found.push((n + 1, target.to_owned()));
            rest = &after[end.min(after.len())..];
        }
    }
    found
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor of a file's headings, with GitHub's `-1`, `-2` for repeated ones.
fn anchors(headings: &[String]) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for heading in headings {
        let base = slug(heading);
        let count = seen.entry(base.clone()).or_insert(0);
        out.insert(if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        });
        *count += 1;
    }
    out
}

// --- Command lines -----------------------------------------------------------------------------

/// A word of a shell line; quoted words are values, never flags or subcommands.
#[derive(Debug)]
struct Word {
    text: String,
    quoted: bool,
}

/// Splits a shell line into commands (at `;`, `&&`, `||`) of words; `#` starts a comment.
fn shell_commands(line: &str) -> Vec<Vec<Word>> {
    let mut commands = vec![Vec::new()];
    let mut word = String::new();
    let mut quoted = false;
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let finish = |commands: &mut Vec<Vec<Word>>, word: &mut String, quoted: &mut bool| {
        let text = std::mem::take(word);
        let current = commands.last_mut().expect("one command at least");
        if !*quoted && (text == "&&" || text == "||") {
            commands.push(Vec::new());
        } else {
            current.push(Word {
                text,
                quoted: *quoted,
            });
        }
        *quoted = false;
    };
    while let Some(c) = chars.next() {
        match c {
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    finish(&mut commands, &mut word, &mut quoted);
                    in_word = false;
                }
            }
            ';' => {
                if in_word {
                    finish(&mut commands, &mut word, &mut quoted);
                    in_word = false;
                }
                commands.push(Vec::new());
            }
            '\'' | '"' => {
                in_word = true;
                quoted = true;
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                    word.push(q);
                }
            }
            '\\' => {
                in_word = true;
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        finish(&mut commands, &mut word, &mut quoted);
    }
    commands.retain(|c| !c.is_empty());
    commands
}

/// The arguments `hefl` receives from this shell command, if it runs `hefl`.
fn hefl_arguments(words: &[Word]) -> Option<&[Word]> {
    let mut i = 0;
    // Environment assignments and wrappers.
    loop {
        let w = words.get(i)?;
        let t = w.text.as_str();
        let assignment = t.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        });
        if !w.quoted && assignment {
            i += 1;
        } else if t == "nice" {
            i += 1;
            if words.get(i).is_some_and(|w| w.text == "-n") {
                i += 2;
            } else if words.get(i).is_some_and(|w| w.text.starts_with("-n")) {
                i += 1;
            }
        } else if matches!(t, "time" | "/usr/bin/time" | "env" | "exec") {
            i += 1;
        } else {
            break;
        }
    }
    let program = words[i].text.as_str();
    if program == "hefl" || program.ends_with("/hefl") {
        return Some(&words[i + 1..]);
    }
    if program != "cargo" || words.get(i + 1).is_none_or(|w| w.text != "run") {
        return None;
    }
    // `cargo run [options] -- arguments`: the root package's `hefl` binary only.
    let mut k = i + 2;
    while let Some(w) = words.get(k) {
        match w.text.as_str() {
            "--" => return Some(&words[k + 1..]),
            "--example" | "--bench" | "--test" => return None,
            "-p" | "--package" | "--bin" => {
                if words.get(k + 1).is_none_or(|p| p.text != "hefl") {
                    return None;
                }
                k += 2;
            }
            t if t.starts_with("--package=") || t.starts_with("--bin=") => {
                if !t.ends_with("=hefl") {
                    return None;
                }
                k += 1;
            }
            _ => k += 1,
        }
    }
    Some(&[])
}

/// A placeholder in a synopsis, standing for any subcommand: `<command>`, `COMMAND`, `...`.
fn is_placeholder(word: &str) -> bool {
    word == "..."
        || word == "…"
        || (word.starts_with('<') && word.ends_with('>'))
        || (word.len() > 1 && word.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
}

/// The command a flag was looked up in, as typed: `hefl serve`, or for `hefl <command> --x`,
/// the subcommand the placeholder stood for.
fn at(path: &[String], node: &Node) -> String {
    path.iter()
        .map(|p| if p == "*" { node.name.as_str() } else { p })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks one invocation's arguments against the tree; returns the subcommands it reached.
fn check_arguments(tree: &Node, args: &[Word]) -> Result<Vec<String>, String> {
    // The commands the words so far may be in (several after a placeholder).
    let mut nodes: Vec<&Node> = vec![tree];
    let mut path = vec!["hefl".to_owned()];
    let mut reached = Vec::new();
    let mut i = 0;
    let takes_value = |flag: &Flag, attached: bool, next: Option<&Word>| {
        flag.takes_value
            && !attached
            && next.is_some_and(|w| {
                let t = w.text.trim_start_matches(['[', '(']);
                w.quoted || !t.starts_with('-')
            })
    };
    while i < args.len() {
        let word = &args[i];
        i += 1;
        if word.quoted {
            continue;
        }
        let t = word
            .text
            .trim_matches(|c| matches!(c, '[' | ']' | '(' | ')' | ','));
        if t == "--" {
            break;
        }
        if let Some(long) = t.strip_prefix("--") {
            let (name, attached) = match long.split_once('=') {
                Some((name, _)) => (name, true),
                None => (long, false),
            };
            let mut value = false;
            for node in &nodes {
                match node.long(name) {
                    Some(flag) => value |= takes_value(flag, attached, args.get(i)),
                    None => {
                        return Err(format!("`{}` has no flag --{name}", at(&path, node)));
                    }
                }
            }
            if value {
                i += 1;
            }
        } else if t.len() > 1
            && t.starts_with('-')
            && t[1..].starts_with(|c: char| c.is_ascii_alphabetic())
        {
            let cluster: Vec<char> = t[1..].chars().collect();
            let mut value = false;
            for (k, &c) in cluster.iter().enumerate() {
                let mut takes = false;
                for node in &nodes {
                    match node.short(c) {
                        Some(flag) => takes |= flag.takes_value,
                        None => {
                            return Err(format!("`{}` has no flag -{c}", at(&path, node)));
                        }
                    }
                }
                if takes {
                    // The rest of the cluster, or the next word, is its value.
                    value = k + 1 == cluster.len();
                    break;
                }
            }
            if value && args.get(i).is_some_and(|w| !w.text.starts_with('-')) {
                i += 1;
            }
        } else if !t.is_empty() && nodes.iter().all(|n| !n.subcommands.is_empty()) {
            // The first word that is not a flag names the subcommand.
            if is_placeholder(t) {
                nodes = nodes
                    .iter()
                    .flat_map(|n| n.subcommands.iter())
                    .filter(|s| s.name != "help" && !s.name.starts_with("__"))
                    .collect();
                path.push("*".to_owned());
                continue;
            }
            let mut next = Vec::new();
            for node in &nodes {
                match node.subcommand(t) {
                    Some(sub) => next.push(sub),
                    None => {
                        let names: Vec<&str> = node
                            .subcommands
                            .iter()
                            .map(|s| s.name.as_str())
                            .filter(|name| !name.starts_with("__"))
                            .collect();
                        return Err(format!(
                            "`{}` has no subcommand `{t}` (it has: {})",
                            path.join(" "),
                            names.join(", ")
                        ));
                    }
                }
            }
            path.push(t.to_owned());
            reached.extend(next.iter().map(|n| n.name.clone()));
            nodes = next;
        }
        // Anything else is a value or a synopsis word ("[training flags]", "...").
    }
    Ok(reached)
}

/// Every `hefl` invocation of a file: (line, the command as written, its arguments).
fn invocations(markdown: &Markdown) -> Vec<(usize, String)> {
    let mut lines: Vec<(usize, String)> = Vec::new();
    for block in &markdown.blocks {
        let mut logical: Option<(usize, String)> = None;
        let mut previous_was_hefl = false;
        for (n, raw) in block {
            let line = raw.trim();
            let line = line.strip_prefix("$ ").unwrap_or(line);
            let continues_synopsis = previous_was_hefl
                && logical.is_none()
                && (line.starts_with('[') || line.starts_with('(') || line.starts_with('-'));
            if continues_synopsis {
                if let Some((_, last)) = lines.last_mut() {
                    last.push(' ');
                    last.push_str(line);
                }
                continue;
            }
            let (start, mut text) = logical.take().unwrap_or((*n, String::new()));
            if !text.is_empty() {
                text.push(' ');
            }
            match line.strip_suffix('\\') {
                Some(head) => {
                    text.push_str(head.trim_end());
                    logical = Some((start, text));
                }
                None => {
                    text.push_str(line);
                    previous_was_hefl = shell_commands(&text)
                        .iter()
                        .any(|c| hefl_arguments(c).is_some());
                    lines.push((start, text));
                }
            }
        }
        if let Some(rest) = logical {
            lines.push(rest);
        }
    }
    lines.extend(markdown.spans.iter().cloned());
    lines
}

/// Every long flag of the tree, in any command.
fn all_long_flags(node: &Node, out: &mut BTreeSet<String>) {
    for flag in &node.flags {
        out.extend(flag.long.iter().cloned());
        out.extend(flag.long_aliases.iter().cloned());
    }
    for sub in &node.subcommands {
        all_long_flags(sub, out);
    }
}

/// Every problem of one Markdown file's inline code that names flags without a command
/// (`--round-timeout` [30s]): each must be a flag of some command.
fn check_bare_flags(
    file: &Path,
    markdown: &Markdown,
    flags: &BTreeSet<String>,
    checked: &mut usize,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (line, text) in &markdown.spans {
        if !text.starts_with("--") {
            continue;
        }
        for words in shell_commands(text) {
            for word in words.iter().filter(|w| !w.quoted) {
                let Some(long) = word.text.strip_prefix("--") else {
                    continue;
                };
                let name = long.split('=').next().unwrap_or(long);
                *checked += 1;
                if !flags.contains(name) {
                    problems.push(format!(
                        "{}:{line}: no command has a flag --{name}: `{text}`",
                        file.display()
                    ));
                }
            }
        }
    }
    problems
}

/// Every problem of one Markdown file's commands; counts the commands checked.
fn check_commands(
    file: &Path,
    markdown: &Markdown,
    tree: &Node,
    checked: &mut usize,
    covered: &mut BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (line, text) in invocations(markdown) {
        for command in shell_commands(&text) {
            let Some(args) = hefl_arguments(&command) else {
                continue;
            };
            *checked += 1;
            match check_arguments(tree, args) {
                Ok(reached) => covered.extend(reached),
                Err(why) => problems.push(format!("{}:{line}: {why}: {text}", file.display())),
            }
        }
    }
    problems
}

// --- Links -------------------------------------------------------------------------------------

/// Every problem of one Markdown file's relative links.
fn check_links(
    file: &Path,
    markdown: &Markdown,
    headings: &mut HashMap<PathBuf, BTreeSet<String>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let dir = file.parent().unwrap_or(Path::new(""));
    for (line, target) in &markdown.links {
        if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path_part, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let linked = if path_part.is_empty() {
            file.to_path_buf()
        } else {
            normalize(&dir.join(path_part))
        };
        let at = format!("{}:{line}: link `{target}`", file.display());
        if !root().join(&linked).exists() {
            problems.push(format!("{at}: {} does not exist", linked.display()));
            continue;
        }
        if let Some(anchor) = anchor.filter(|_| linked.extension().is_some_and(|e| e == "md")) {
            let known = headings
                .entry(linked.clone())
                .or_insert_with(|| anchors(&parse_markdown(&read(&linked)).headings));
            if !known.contains(anchor) {
                problems.push(format!(
                    "{at}: {} has no heading with anchor #{anchor}",
                    linked.display()
                ));
            }
        }
    }
    problems
}

/// `docs/../README.md` as `README.md`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every `docs/NAME.md` (with an optional `#anchor`) named in a file of `src/` or `hefl-py/`.
fn guide_references() -> Vec<(PathBuf, usize, String)> {
    let mut files = Vec::new();
    walk(&root().join("src"), &mut files);
    walk(&root().join("hefl-py").join("src"), &mut files);
    walk(&root().join("hefl-py").join("python"), &mut files);
    files.retain(|p| p.extension().is_some_and(|e| e == "rs" || e == "py"));
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("docs/") {
                let reference: String = rest[at..]
                    .chars()
                    .take_while(|&c| c.is_ascii_alphanumeric() || "_-./#".contains(c))
                    .collect();
                let reference = reference.trim_end_matches('.').to_owned();
                rest = &rest[at + 5..];
                if reference.contains(".md") {
                    found.push((relative(&file), n + 1, reference));
                }
            }
        }
    }
    found
}

// --- The tests -------------------------------------------------------------------------------

/// Every documented `hefl` command line uses subcommands and flags the CLI has, every flag
/// named alone is one of them, and every subcommand is documented somewhere.
#[test]
fn documented_commands_exist_in_the_cli() {
    let tree = cli_tree();
    let mut flags = BTreeSet::new();
    all_long_flags(&tree, &mut flags);
    let (mut checked, mut covered, mut problems) = (0, BTreeSet::new(), Vec::new());
    let mut bare = 0;
    for file in markdown_files() {
        let markdown = parse_markdown(&read(&file));
        problems.extend(check_commands(
            &file,
            &markdown,
            &tree,
            &mut checked,
            &mut covered,
        ));
        problems.extend(check_bare_flags(&file, &markdown, &flags, &mut bare));
    }
    for sub in &tree.subcommands {
        if sub.name != "help" && !sub.name.starts_with("__") && !covered.contains(&sub.name) {
            problems.push(format!(
                "`hefl {}` appears in no command line of the docs",
                sub.name
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of the docs' command lines do not match the CLI (checked against `hefl __cli-tree`):\n{}",
        problems.len(),
        problems.join("\n")
    );
    // A reader that found nothing would pass: the docs hold about a hundred.
    assert!(checked >= 50, "only {checked} hefl command lines found");
    assert!(
        bare >= 30,
        "only {bare} flags named without a command found"
    );
    eprintln!("checked {checked} hefl command lines and {bare} flags named alone");
}

/// Every relative link of the docs, and every guide the sources name, exists.
#[test]
fn documented_links_point_at_existing_files() {
    let mut headings = HashMap::new();
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let markdown = parse_markdown(&read(&file));
        checked += markdown.links.len();
        problems.extend(check_links(&file, &markdown, &mut headings));
    }
    for (file, line, reference) in guide_references() {
        checked += 1;
        let (path, anchor) = match reference.split_once('#') {
            Some((p, a)) => (PathBuf::from(p), Some(a)),
            None => (PathBuf::from(&reference), None),
        };
        let at = format!("{}:{line}: `{reference}`", file.display());
        if !root().join(&path).exists() {
            problems.push(format!("{at}: {} does not exist", path.display()));
        } else if let Some(anchor) = anchor {
            let known = headings
                .entry(path.clone())
                .or_insert_with(|| anchors(&parse_markdown(&read(&path)).headings));
            if !known.contains(anchor) {
                problems.push(format!("{at}: no heading with anchor #{anchor}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} broken links:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(checked >= 30, "only {checked} links found");
}

/// The README stays a five-minute read, and CI runs the test command it gives.
#[test]
fn readme_is_short_and_ci_runs_its_test_command() {
    let readme = read(Path::new("README.md"));
    let lines = readme.lines().count();
    assert!(lines <= 300, "README.md has {lines} lines, at most 300");

    let markdown = parse_markdown(&readme);
    let test_commands: BTreeSet<String> = markdown
        .blocks
        .iter()
        .flatten()
        .flat_map(|(_, line)| shell_commands(line))
        .filter_map(|words| {
            let start = words.iter().position(|w| !w.text.contains('='))?;
            let command: Vec<&str> = words[start..].iter().map(|w| w.text.as_str()).collect();
            (command.len() >= 2 && command[..2] == ["cargo", "test"]).then(|| command.join(" "))
        })
        .collect();
    assert_eq!(
        test_commands.len(),
        1,
        "README.md should give one test command, found {test_commands:?}"
    );
    let command = test_commands.first().expect("one test command");
    let ci = read(Path::new(".ci/run"));
    assert!(
        ci.lines().any(|l| l.trim() == command),
        ".ci/run does not run the README's test command `{command}`"
    );
}

/// The reader itself: continuations, prefixes, synopsis notation and a renamed flag.
#[test]
fn the_command_reader_understands_the_forms_the_docs_use() {
    let tree = cli_tree();
    let check = |line: &str| -> Vec<Result<Vec<String>, String>> {
        shell_commands(line)
            .iter()
            .filter_map(|c| hefl_arguments(c).map(|a| check_arguments(&tree, a)))
            .collect()
    };
    let ok = |line: &str| {
        let results = check(line);
        assert_eq!(results.len(), 1, "{line}: one hefl command expected");
        assert!(results[0].is_ok(), "{line}: {:?}", results[0]);
    };
    let fails = |line: &str, why: &str| {
        let results = check(line);
        assert_eq!(results.len(), 1, "{line}: one hefl command expected");
        let message = results[0].as_ref().expect_err(line);
        assert!(message.contains(why), "{line}: {message}");
    };
    ok("MNIST_DIR=../shared/mnist nice -n 10 target/release/hefl demo --epochs=2 --network");
    ok("cargo run --release --locked -- bench-report --quick");
    ok(
        "hefl train --mode federated [--privacy plain|he] [--strategy fedsgd|fedavg --local-steps 5]",
    );
    ok("hefl compare --epochs 1"); // an alias of demo
    ok("hefl <command> --help");
    ok("hefl ... --help");
    ok("hefl keygen   # --not-a-flag in a comment");
    fails("hefl train --epochz 3", "`hefl train` has no flag --epochz");
    fails(
        "cargo run -- serve --bind=0.0.0.0:1 --tls-certificate x",
        "--tls-certificate",
    );
    fails("hefl trian --epochs 3", "has no subcommand `trian`");
    fails("hefl demo -Z", "no flag -Z");
    assert!(check("cargo run -p hefl-py --example bench_envelope").is_empty());
    assert!(check("hefl-py/bench/bench_envelope.py --values 3").is_empty());

    let markdown = parse_markdown(
        "Text `hefl join ... --state-dir\nDIR` and [a](docs/x.md#y).\n\n\
         ```sh\nhefl serve --bind 0.0.0.0:7878 \\\n   --min-parties 2\n```\n\n    \
         hefl dp-sweep [--epsilons 1,2]\n                  [--tune [--validation-size 5000]]\n",
    );
    let found: Vec<String> = invocations(&markdown).into_iter().map(|(_, t)| t).collect();
    assert_eq!(
        found,
        [
            "hefl serve --bind 0.0.0.0:7878 --min-parties 2",
            "hefl dp-sweep [--epsilons 1,2] [--tune [--validation-size 5000]]",
            "hefl join ... --state-dir DIR",
        ]
    );
    assert_eq!(markdown.links, [(2, "docs/x.md#y".to_owned())]);
    assert_eq!(
        slug("Tuned DP-SGD: `dp-sweep --tune`"),
        "tuned-dp-sgd-dp-sweep---tune"
    );
}
