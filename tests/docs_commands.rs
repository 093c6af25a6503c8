//! The documentation's shell blocks, checked: every fenced shell block in
//! README.md and docs/*.md is marked `sh standalone` or `sh norun`, and
//! every `sh standalone` block runs, in order within its file, against a
//! fresh standalone `rpcgate` (the built binary, no config, `HOME` a fresh
//! temporary directory so its admin token is fresh). Each command must exit
//! 0, and a `# expect: TEXT` line after a command requires TEXT in that
//! command's output (stdout and stderr together). A failure names the file
//! and line. The rules are in docs/README.md ("Commands that stay true").
//!
//! Ports: the standalone is started on free ports (`--listen`, `--admin`,
//! `--locator` at 127.0.0.1:0, and its locator admin too when the binary
//! has a flag for it) and the documented default addresses in each command
//! (`localhost:8080`, `127.0.0.1:9090`, ...) are rewritten to the bound
//! ones read from its banner, so this test never collides with another
//! test, another checkout's run, or a standalone a developer has running.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// The languages whose fenced blocks are shell commands and must be marked.
const SHELL: [&str; 5] = ["sh", "bash", "shell", "console", "zsh"];

/// A block that runs against the standalone default.
const STANDALONE: &str = "standalone";

/// A block that is not run; its first line says why.
const NORUN: &str = "norun";

/// The first line of a `norun` block starts with this, then the reason.
const NOT_RUN: &str = "# not run:";

/// A line in a `standalone` block that states what the command before it
/// prints.
const EXPECT: &str = "# expect:";

/// The longest one documented command may take (a failure bound, far above
/// what any of them needs; the 5 MB upload takes well under a second).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest the standalone may take to print its banner (a failure
/// bound: a debug build on a busy 2-core box starts in about a second).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The banner's last line: everything is up once it is printed.
const BANNER_END: &str = "Ctrl-C stops it.";

/// The standalone default's addresses as the docs write them, by what
/// serves them (the ports are what the docs use; `localhost` and
/// `127.0.0.1` are both rewritten).
const DEFAULT_PORTS: [(Role, u16); 4] = [
    (Role::Gateway, 8080),
    (Role::Admin, 9090),
    (Role::Locator, 10053),
    (Role::LocatorAdmin, 10054),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Gateway,
    Admin,
    Locator,
    LocatorAdmin,
}

/// One fenced code block.
#[derive(Debug)]
struct Block {
    /// The info string's words (`["sh", "standalone"]`).
    info: Vec<String>,
    /// The line of the opening fence (1-based).
    line: usize,
    /// The content lines with their line numbers.
    lines: Vec<(usize, String)>,
}

/// The fenced code blocks of a Markdown text (backtick or tilde fences, at
/// any indentation, so blocks inside list items count).
fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(char, usize, Block)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim_start();
        let fence = trimmed
            .chars()
            .next()
            .filter(|c| *c == '`' || *c == '~')
            .map(|c| (c, trimmed.chars().take_while(|x| *x == c).count()))
            .filter(|(_, n)| *n >= 3);
        match (&mut open, fence) {
            (Some((c, n, _)), Some((fc, fnum)))
                if fc == *c && fnum >= *n && trimmed.trim_end().chars().all(|x| x == fc) =>
            {
                let (_, _, block) = open.take().unwrap();
                out.push(block);
            }
            (Some((_, _, block)), _) => block.lines.push((line, raw.to_owned())),
            (None, Some((c, n))) => {
                let info = trimmed[n..].split_whitespace().map(str::to_owned).collect();
                open = Some((
                    c,
                    n,
                    Block {
                        info,
                        line,
                        lines: Vec::new(),
                    },
                ));
            }
            (None, None) => {}
        }
    }
    // An unclosed fence runs to the end of the document (CommonMark).
    out.extend(open.map(|(_, _, block)| block));
    out
}

/// What is wrong with a block's marking, if anything.
fn marking_error(block: &Block) -> Option<String> {
    let lang = block.info.first()?;
    if !SHELL.contains(&lang.as_str()) {
        return None;
    }
    let mark = block.info.get(1).map(String::as_str);
    match (mark, block.info.len()) {
        (Some(STANDALONE), 2) => None,
        (Some(NORUN), 2) => {
            let first = block.lines.iter().find(|(_, l)| !l.trim().is_empty());
            match first {
                Some((_, l))
                    if l.trim_start().starts_with(NOT_RUN)
                        && !l.trim_start()[NOT_RUN.len()..].trim().is_empty() =>
                {
                    None
                }
                _ => Some(format!(
                    "a `{lang} norun` block must start with `{NOT_RUN} <why>`"
                )),
            }
        }
        _ => Some(format!(
            "a `{}` shell block must be marked `{lang} {STANDALONE}` or `{lang} {NORUN}`",
            block.info.join(" ")
        )),
    }
}

/// A documented command: the line it starts on, its text (continuation
/// lines joined), and the texts its output must contain.
#[derive(Debug)]
struct Step {
    line: usize,
    command: String,
    expects: Vec<(usize, String)>,
}

/// The commands of a `standalone` block, in order; an `# expect:` before
/// any command is an error naming its line.
fn steps(block: &Block, file: &str) -> Result<Vec<Step>, String> {
    let mut steps: Vec<Step> = Vec::new();
    let mut continued = false;
    for (line, raw) in &block.lines {
        let text = raw.trim();
        if continued {
            let step = steps.last_mut().unwrap();
            step.command.push('\n');
            step.command.push_str(raw);
            continued = continues(&step.command);
            continue;
        }
        if let Some(expect) = text.strip_prefix(EXPECT) {
            let Some(step) = steps.last_mut() else {
                return Err(format!("{file}:{line}: `{EXPECT}` before any command"));
            };
            step.expects.push((*line, expect.trim().to_owned()));
        } else if !text.is_empty() && !text.starts_with('#') {
            steps.push(Step {
                line: *line,
                command: raw.to_owned(),
                expects: Vec::new(),
            });
            continued = continues(raw);
        }
    }
    Ok(steps)
}

/// Whether a command goes on past the end of `text`: a trailing `\`, or a
/// quote still open (a multi-line `-d '...'`). A `#` that starts a word
/// outside quotes starts a comment, to the end of its line.
fn continues(text: &str) -> bool {
    let mut quote: Option<char> = None;
    let (mut escaped, mut comment, mut word_start) = (false, false, true);
    for c in text.chars() {
        if comment {
            comment = c != '\n';
            word_start = true;
            continue;
        }
        match (quote, c) {
            _ if escaped => escaped = false,
            (Some('\''), '\'') => quote = None,
            (Some('\''), _) => {}
            (_, '\\') => escaped = true,
            (Some('"'), '"') => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') if word_start => comment = true,
            _ => {}
        }
        word_start = c.is_whitespace();
    }
    !comment && (quote.is_some() || text.trim_end().ends_with('\\'))
}

/// The Markdown files the contract covers: README.md and docs/*.md.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `path` as the failure messages name it: relative to the crate root.
fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every marking error of `text`, as `FILE:LINE: why`.
fn marking_errors(file: &str, text: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for block in blocks(text) {
        if let Some(why) = marking_error(&block) {
            errors.push(format!("{file}:{}: {why}", block.line));
        }
        if block.info.first().map(String::as_str) == Some("sh")
            && block.info.get(1).map(String::as_str) == Some(STANDALONE)
            && let Err(e) = steps(&block, file)
        {
            errors.push(e);
        }
    }
    errors
}

#[test]
fn every_shell_block_is_marked_standalone_or_norun() {
    let mut errors = Vec::new();
    let mut counted = BTreeMap::new();
    for path in documents(&root()) {
        let text = std::fs::read_to_string(&path).unwrap();
        let file = shown(&path);
        errors.extend(marking_errors(&file, &text));
        for block in blocks(&text) {
            if let Some(mark) = block.info.get(1) {
                *counted.entry(mark.clone()).or_insert(0) += 1;
            }
        }
    }
    assert!(
        errors.is_empty(),
        "unmarked shell blocks:\n{}",
        errors.join("\n")
    );
    // The docs do have runnable blocks: a parser that found none would
    // check nothing.
    assert!(
        counted.get(STANDALONE).copied().unwrap_or(0) >= 5,
        "{counted:?}"
    );
}

#[test]
fn the_marking_check_names_the_file_and_line_of_a_bad_block() {
    let text = "# t\n\n```bash\ncurl x\n```\n\n```sh norun\ncurl y\n```\n\n\
                ```sh standalone\n# expect: z\n```\n\n```sh norun\n# not run: a cluster\n```\n\
                ```text\nanything\n```\n";
    let errors = marking_errors("x.md", text);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].starts_with("x.md:3: "), "{errors:#?}");
    assert!(errors[1].starts_with("x.md:7: "), "{errors:#?}");
    assert!(errors[2].starts_with("x.md:12: "), "{errors:#?}");
}

/// A running standalone `rpcgate` with a fresh `HOME`.
struct Standalone {
    child: Child,
    home: PathBuf,
    /// Documented `host:port` → the bound address, for every spelling.
    rewrites: Vec<(String, String)>,
    /// Its stderr (its log), for failure messages.
    stderr: PathBuf,
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

/// One standalone at a time in this test binary: an address the checker
/// cannot move (a role with no flag for a free port) must not be bound
/// twice.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Standalone {
    async fn start() -> Self {
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let home = std::env::temp_dir().join(format!("rpcgate-docs-{}-{run}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        let stderr = home.join("rpcgate.stderr");
        let mut command = Command::new(env!("CARGO_BIN_EXE_rpcgate"));
        command
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--locator", "127.0.0.1:0", "--log-level", "warn"]);
        if let Some(flag) = locator_admin_flag().await {
            command.args([flag.as_str(), "127.0.0.1:0"]);
        }
        let mut child = command
            .env("HOME", &home)
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", env!("CARGO_BIN_EXE_rpcgate")));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut bound = BTreeMap::new();
        let mut banner = String::new();
        let read = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                banner.push_str(&line);
                banner.push('\n');
                if let Some((role, addr)) = banner_address(&line) {
                    bound.entry(role).or_insert(addr);
                }
                if line.starts_with(BANNER_END) {
                    return true;
                }
            }
            false
        };
        let ready = tokio::time::timeout(START_TIMEOUT, read).await;
        if ready != Ok(true) {
            let log = std::fs::read_to_string(&stderr).unwrap_or_default();
            panic!(
                "the standalone did not print `{BANNER_END}` within {START_TIMEOUT:?}:\n\
                 {banner}\n--- stderr ---\n{log}"
            );
        }
        // Keep its stdout drained so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let mut rewrites = Vec::new();
        for (role, port) in DEFAULT_PORTS {
            // A role the banner does not show keeps its documented address.
            let Some(addr) = bound.get(&role) else {
                continue;
            };
            for host in ["localhost", "127.0.0.1"] {
                rewrites.push((format!("{host}:{port}"), addr.to_string()));
            }
        }
        Self {
            child,
            home,
            rewrites,
            stderr,
        }
    }

    /// `command` with the documented addresses replaced by the bound ones.
    fn rewrite(&self, command: &str) -> String {
        let mut out = command.to_owned();
        for (from, to) in &self.rewrites {
            out = out.replace(from, to);
        }
        out
    }

    /// Runs one command with `sh -c` from the crate root, with the
    /// standalone's `HOME` and the built `rpcgate` first on `PATH`; its exit
    /// status and output (stdout, then stderr), or why it could not run.
    async fn run(&self, command: &str) -> Result<(Option<i32>, String), String> {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_rpcgate")).parent().unwrap();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin_dir.to_path_buf()];
        paths.extend(std::env::split_paths(&path));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(root())
            .env("HOME", &self.home)
            .env("PATH", std::env::join_paths(paths).unwrap())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills the whole pipeline.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run sh: {e}"))?;
        let pid = child.id();
        let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let finished = tokio::time::timeout(COMMAND_TIMEOUT, async {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let (ra, rb) = tokio::join!(out.read_to_end(&mut a), err.read_to_end(&mut b));
            ra.and(rb).map_err(|e| e.to_string())?;
            let status = child.wait().await.map_err(|e| e.to_string())?;
            a.extend_from_slice(&b);
            Ok::<_, String>((status.code(), String::from_utf8_lossy(&a).into_owned()))
        })
        .await;
        match finished {
            Ok(result) => result,
            Err(_) => {
                if let Some(pid) = pid {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", "--", &format!("-{pid}")])
                        .status();
                }
                Err(format!("did not finish within {COMMAND_TIMEOUT:?}"))
            }
        }
    }

    async fn stop(mut self) -> String {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&self.home);
        log
    }
}

/// The address a banner line announces, and what serves it. The banner
/// reads `... standalone: gateway http://A`, `  admin   http://B ...`,
/// `  locator C ...`; a line naming both a locator and an admin is the
/// embedded locator's admin API.
fn banner_address(line: &str) -> Option<(Role, SocketAddr)> {
    let lower = line.to_ascii_lowercase();
    let trimmed = lower.trim_start();
    let role = if lower.contains("gateway http://") {
        Role::Gateway
    } else if trimmed.contains("locator") && trimmed.contains("admin") {
        Role::LocatorAdmin
    } else if trimmed.starts_with("admin") {
        Role::Admin
    } else if trimmed.starts_with("locator") {
        Role::Locator
    } else {
        return None;
    };
    let addr = line.split_whitespace().find_map(|word| {
        let word = word.strip_prefix("http://").unwrap_or(word);
        word.trim_end_matches(['/', ',', ')', ';', '.'])
            .parse::<SocketAddr>()
            .ok()
    })?;
    Some((role, addr))
}

/// The standalone's flag for its embedded locator's admin address, when the
/// binary has one (`--locator-admin...` in its `--help`): then that API
/// gets a free port too; otherwise it keeps its documented one.
async fn locator_admin_flag() -> Option<String> {
    let help = Command::new(env!("CARGO_BIN_EXE_rpcgate"))
        .arg("--help")
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&help.stdout).into_owned();
    text.split(|c: char| c.is_whitespace() || c == ',' || c == '=')
        .find(|w| w.starts_with("--locator-admin") && !w.contains("token"))
        .map(str::to_owned)
}

/// Runs the `sh standalone` blocks of `text` (shown as `file`) against a
/// fresh standalone; every failure as `FILE:LINE: what`, with the output.
/// A command that exits non-zero (or times out) ends its block: the later
/// commands of that block depend on it, and are reported as skipped.
async fn run_document(file: &str, text: &str) -> Vec<String> {
    let mut runnable = Vec::new();
    let mut failures = Vec::new();
    for block in blocks(text) {
        if block.info.len() == 2 && block.info[0] == "sh" && block.info[1] == STANDALONE {
            match steps(&block, file) {
                Ok(s) if !s.is_empty() => runnable.push(s),
                Ok(_) => {}
                Err(e) => failures.push(e),
            }
        }
    }
    if runnable.is_empty() {
        return failures;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let standalone = Standalone::start().await;
    for block in &runnable {
        for (i, step) in block.iter().enumerate() {
            let command = standalone.rewrite(&step.command);
            let shown_command = step.command.trim();
            let rest = || {
                let lines: Vec<String> =
                    block[i + 1..].iter().map(|s| s.line.to_string()).collect();
                if lines.is_empty() {
                    String::new()
                } else {
                    format!(
                        "\n(the rest of its block was skipped: line(s) {})",
                        lines.join(", ")
                    )
                }
            };
            let (status, output) = match standalone.run(&command).await {
                Ok(ran) => ran,
                Err(why) => {
                    failures.push(format!(
                        "{file}:{}: `{shown_command}` {why}{}",
                        step.line,
                        rest()
                    ));
                    break;
                }
            };
            if status != Some(0) {
                failures.push(format!(
                    "{file}:{}: `{shown_command}` exited with {}\n--- output ---\n{output}{}",
                    step.line,
                    status.map_or("a signal".to_owned(), |c| c.to_string()),
                    rest()
                ));
            }
            for (line, expect) in &step.expects {
                if !output.contains(expect.as_str()) {
                    failures.push(format!(
                        "{file}:{line}: expected `{expect}` in the output of line {} \
                         (`{shown_command}`)\n--- output ---\n{output}",
                        step.line
                    ));
                }
            }
            if status != Some(0) {
                break;
            }
        }
    }
    let log = standalone.stop().await;
    if !failures.is_empty() && !log.trim().is_empty() {
        let mut last = failures.pop().unwrap();
        let _ = write!(last, "\n--- the standalone's log ({file}) ---\n{log}");
        failures.push(last);
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_blocks_run_against_a_fresh_standalone() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for path in documents(&root()) {
        let text = std::fs::read_to_string(&path).unwrap();
        let file = shown(&path);
        ran += blocks(&text)
            .iter()
            .filter(|b| b.info.len() == 2 && b.info[1] == STANDALONE)
            .count();
        failures.extend(run_document(&file, &text).await);
    }
    assert!(
        ran >= 5,
        "the docs have runnable blocks to check (found {ran})"
    );
    assert!(
        failures.is_empty(),
        "{} documented command(s) failed against the standalone default:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The checker itself: a command that fails and an expectation that does
/// not hold are reported with their file and line, and addresses are
/// rewritten to the bound ones (the first command would fail otherwise, or
/// reach someone else's standalone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_block_is_reported_with_its_file_and_line() {
    let text = "# t\n\n\
                ```sh standalone\n\
                curl -sf http://localhost:8080/hello/http/\n\
                # expect: Hello, World!\n\
                curl -sf http://127.0.0.1:8080/hello/http/\n\
                # expect: Goodbye\n\
                ```\n\n\
                ```sh standalone\n\
                curl -sf http://127.0.0.1:9090/ping \\\n  -o /dev/null\n\
                curl -sf http://127.0.0.1:8080/no-such-service/http/\n\
                curl -sf http://127.0.0.1:8080/hello/http/\n\
                ```\n";
    let failures = run_document("broken.md", text).await;
    assert_eq!(failures.len(), 2, "{failures:#?}");
    assert!(
        failures[0].starts_with("broken.md:7: expected `Goodbye`"),
        "{failures:#?}"
    );
    assert!(
        failures[1].starts_with(
            "broken.md:13: `curl -sf http://127.0.0.1:8080/no-such-service/http/` exited with 22"
        ),
        "{failures:#?}"
    );
    assert!(failures[1].contains("skipped: line(s) 14"), "{failures:#?}");
}

#[test]
fn commands_go_on_over_backslashes_and_open_quotes_but_not_comments() {
    let text = "```sh standalone\n\
                curl -s x \\\n  -d '[1,\n     2]'   # the app's answer\n\
                # a comment line, the doc's own\n\
                echo it's'' fine # it's a comment\n\
                # expect: fine\n\
                ```\n";
    let block = blocks(text).pop().unwrap();
    let steps = steps(&block, "x.md").unwrap();
    assert_eq!(steps.len(), 2, "{steps:#?}");
    assert_eq!(steps[0].line, 2);
    assert_eq!(
        steps[0].command,
        "curl -s x \\\n  -d '[1,\n     2]'   # the app's answer"
    );
    assert_eq!(steps[1].line, 6);
    assert_eq!(steps[1].expects, [(7, "fine".to_owned())]);
}
