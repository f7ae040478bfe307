//! The README is tested: every command and config it shows runs as shown,
//! and every number it quotes says the command that measured it.
//!
//! * Every fenced code block is extracted with its language. ```sh blocks
//!   run top to bottom, command line by command line, in one scratch copy of
//!   what a user has after `scripts/tutorial` (see [`Scratch`]), with the
//!   built `shimmer` first on `PATH`; each must exit 0 within
//!   [`COMMAND_TIMEOUT`] (or the status its comment gives: `# exit status 2`).
//!   Commands that cannot run in a test are listed in [`NOT_RUN`] with the
//!   reason and a lighter check.
//! * ```yaml blocks with a top-level `name:` (or `extends:`) are whole
//!   experiments and must pass `shimmer validate` (data the README says the
//!   user has swapped for the sample by [`DATA_STAND_INS`]); the others are
//!   fragments, merged into [`FRAGMENT_BASE`] through `extends:` and
//!   validated.
//! * A ```toml block and the ```rust block after it are a plugin crate: it
//!   must build offline against the checkout's `shimmer-plugin-api` and load
//!   in `shimmer plugins inspect`.
//! * ```python blocks are not run (they need PyTorch and shimmer); they must
//!   parse as Python.
//! * Numbers: see [`unsourced_measurements`].

use crate::common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a README command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest the plugin example may take to build.
const PLUGIN_BUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// One fenced code block of the README.
#[derive(Debug)]
struct Block {
    /// The word after the opening fence (`sh`, `yaml`, ...).
    lang: String,
    /// 1-based line of the opening fence.
    line: usize,
    /// The `## ` heading the block sits under.
    section: String,
    /// `(1-based line, text)` of each line between the fences.
    lines: Vec<(usize, String)>,
}

impl Block {
    fn text(&self) -> String {
        self.lines.iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    fn place(&self) -> String {
        format!(
            "README.md line {} (```{} block in \"## {}\")",
            self.line, self.lang, self.section
        )
    }
}

fn readme() -> String {
    std::fs::read_to_string(common::workspace_root().join("README.md")).expect("read README.md")
}

/// The fenced code blocks of `text`, in order.
fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(lang)) => {
                open = Some(Block {
                    lang: lang.trim().to_string(),
                    line: n,
                    section: section.clone(),
                    lines: Vec::new(),
                })
            }
            (None, None) => {
                if let Some(h) = line.strip_prefix("## ") {
                    section = h.trim().to_string();
                }
            }
            (Some(_), Some(_)) => out.push(open.take().unwrap()),
            (Some(b), None) => b.lines.push((n, line.to_string())),
        }
    }
    if let Some(b) = open {
        panic!("{}: the code block is never closed", b.place());
    }
    out
}

/// One command line of a ```sh block: continuations joined, the comment
/// after `#` split off.
#[derive(Debug, PartialEq)]
struct ShellCommand {
    line: usize,
    command: String,
    comment: String,
}

/// Splits `line` at its first `#` that starts a shell comment (at the start
/// or after blank space, outside quotes).
fn split_comment(line: &str) -> (&str, &str) {
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && prev.is_whitespace() => return (&line[..i], &line[i + 1..]),
            None => {}
        }
        prev = c;
    }
    (line, "")
}

fn shell_commands(block: &Block) -> Vec<ShellCommand> {
    let mut out = Vec::new();
    let mut pending: Option<ShellCommand> = None;
    for (n, line) in &block.lines {
        let (code, comment) = split_comment(line);
        let code = code.trim_end();
        let (code, continued) = match code.strip_suffix('\\') {
            Some(c) => (c.trim_end(), true),
            None => (code, false),
        };
        let cmd = pending.get_or_insert_with(|| ShellCommand {
            line: *n,
            command: String::new(),
            comment: String::new(),
        });
        if !code.trim().is_empty() {
            if !cmd.command.is_empty() {
                cmd.command.push(' ');
            }
            cmd.command.push_str(code.trim());
        }
        if !comment.trim().is_empty() {
            if !cmd.comment.is_empty() {
                cmd.comment.push(' ');
            }
            cmd.comment.push_str(comment.trim());
        }
        if !continued {
            let cmd = pending.take().unwrap();
            if !cmd.command.is_empty() {
                out.push(cmd);
            }
        }
    }
    if let Some(cmd) = pending {
        panic!(
            "{}: line {} ends with `\\` and nothing follows",
            block.place(),
            cmd.line
        );
    }
    out
}

/// The exit status a command's comment says it ends with (`exit status 2`),
/// else 0.
fn expected_status(comment: &str) -> i32 {
    let words: Vec<&str> = comment.split_whitespace().collect();
    words
        .windows(3)
        .find(|w| w[0].trim_start_matches('(') == "exit" && w[1] == "status")
        .and_then(|w| {
            w[2].trim_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// A README command the test does not run, why, and what it checks instead.
struct NotRun {
    command: &'static str,
    why: &'static str,
    check: fn(&Scratch, &str),
}

/// Commands of the README that are not run as shown. Each must still be in
/// the README (a stale entry fails the test).
const NOT_RUN: &[NotRun] = &[
    NotRun {
        command: "scripts/tutorial",
        why: "builds the whole workspace in release (many minutes); the test runs its \
              steps itself (the pretraining commands of \"Running experiments\") on the \
              binary the tests built, standing in for target/release",
        check: check_bash_syntax,
    },
    NotRun {
        command: "cargo test --workspace",
        why: "the test suite this test is part of: it would run itself, and takes many minutes",
        check: check_cargo_workspace,
    },
    NotRun {
        command: "tensorboard --logdir runs/",
        why: "a web server that runs until stopped (and TensorBoard may not be installed)",
        check: check_tensorboard_logs,
    },
    NotRun {
        command: "shimmer sweep experiments/tutorial/sweep.yaml --launcher slurm --partition cpu \
                  --time 00:10:00",
        why: "submits a Slurm job array with sbatch: needs a Slurm cluster (tests/e2e/slurm.rs \
              runs it where one is up)",
        check: check_slurm_dry_run,
    },
    NotRun {
        command: "scripts/bench",
        why: "times three workloads against PyTorch, which it installs first (many minutes)",
        check: check_bash_syntax,
    },
];

/// Data the README says the user has, the stand-in the test gives its
/// experiments instead, and the overrides the stand-in needs.
const DATA_STAND_INS: &[(&str, &str, &[&str])] = &[
    // shimmer-ssd's Simple Shapes files (500 000 training items) -> the
    // sample beside the checkout, in the same layout; it has 4 training
    // items, fewer than one batch of the full data's size, so its one short
    // batch is kept instead of dropped.
    (
        "/data/simple_shapes",
        "../shared/datasets/simple-shapes-sample",
        &["data.drop_last=false"],
    ),
];

/// The experiment a ```yaml fragment (no `name:`) is merged into.
const FRAGMENT_BASE: &str = "experiments/tutorial/gw.yaml";

/// What a user has after cloning and running `scripts/tutorial`, in a temp
/// folder: `shimmer-rs/` with copies of `experiments/` and `scripts/`,
/// `shimmer-rs/target/release` a link to the folder the tests built the
/// binary and plugins in (what `scripts/tutorial` builds), `shared/` beside
/// it (the data the README points to as `../shared/`), and a `home/` for
/// `~`. Nothing is written into the checkout.
struct Scratch {
    _root: tempfile::TempDir,
    work: PathBuf,
    home: PathBuf,
    logs: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let root = tempfile::tempdir().unwrap();
        let work = root.path().join("shimmer-rs");
        let home = root.path().join("home");
        let logs = root.path().join("logs");
        for d in [&work, &home, &logs] {
            std::fs::create_dir_all(d).unwrap();
        }
        let checkout = common::workspace_root();
        for d in ["experiments", "scripts"] {
            copy_tree(&checkout.join(d), &work.join(d));
        }
        std::fs::create_dir_all(work.join("target")).unwrap();
        std::os::unix::fs::symlink(common::build_all(), work.join("target/release")).unwrap();
        let shared = checkout
            .join("../shared")
            .canonicalize()
            .expect("../shared beside the checkout");
        std::os::unix::fs::symlink(shared, root.path().join("shared")).unwrap();
        Scratch {
            _root: root,
            work,
            home,
            logs,
        }
    }

    /// A `bash` running `command` in the working folder, as a user's shell.
    fn bash(&self, command: &str) -> Command {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![common::build_all().to_path_buf()];
        paths.extend(std::env::split_paths(&path));
        let mut cmd = Command::new("bash");
        cmd.arg("-o")
            .arg("pipefail")
            .arg("-c")
            .arg(command)
            .current_dir(&self.work)
            .env("PATH", std::env::join_paths(paths).unwrap())
            .env("HOME", &self.home)
            .env_remove("SHIMMER_PLUGIN_PATH")
            .env_remove("SHIMMER_TRACE_BATCHES")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `cmd` with a time limit; its output goes to files (so nothing
    /// blocks on a full pipe).
    fn run(&self, mut cmd: Command, timeout: Duration) -> Outcome {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out_path = self.logs.join(format!("{n}.out"));
        let err_path = self.logs.join(format!("{n}.err"));
        use std::os::unix::process::CommandExt as _;
        let mut child = cmd
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .process_group(0)
            .spawn()
            .expect("start the command");
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if start.elapsed() > timeout {
                // The whole process group: bash and what it started.
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(format!("-{}", child.id()))
                    .status();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Outcome {
            code: status.and_then(|s| s.code()),
            timed_out: status.is_none(),
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        }
    }

    /// Runs a shell command line; panics naming `place` unless it ends with
    /// `expected`.
    fn expect(&self, place: &str, command: &str, expected: i32) -> Outcome {
        let out = self.run(self.bash(command), COMMAND_TIMEOUT);
        out.assert(place, command, expected);
        out
    }
}

struct Outcome {
    code: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn assert(&self, place: &str, command: &str, expected: i32) {
        if self.timed_out {
            panic!(
                "{place}: `{command}` ran past {} s\nstdout:\n{}\nstderr:\n{}",
                COMMAND_TIMEOUT.as_secs(),
                tail(&self.stdout),
                self.stderr
            );
        }
        assert!(
            self.code == Some(expected),
            "{place}: `{command}` exited with {:?}, expected {expected}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            tail(&self.stdout),
            self.stderr
        );
    }
}

/// The last lines of a long output.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

// ----- checks of the commands that are not run -----

/// The script exists, is executable and parses (`bash -n`).
fn check_bash_syntax(s: &Scratch, command: &str) {
    let script = command.split_whitespace().next().unwrap();
    let path = s.work.join(script);
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(
        meta.permissions().mode() & 0o111 != 0,
        "{script} is not executable"
    );
    s.expect(script, &format!("bash -n {script}"), 0);
}

/// `cargo` reads the workspace and finds the e2e tests in it.
fn check_cargo_workspace(s: &Scratch, command: &str) {
    let mut cmd = s.bash("cargo metadata --no-deps --offline --format-version 1");
    cmd.current_dir(common::workspace_root());
    let out = s.run(cmd, COMMAND_TIMEOUT);
    out.assert(command, "cargo metadata --no-deps --offline", 0);
    assert!(
        out.stdout.contains("\"name\":\"shimmer-e2e\""),
        "the workspace has no shimmer-e2e package"
    );
}

/// TensorBoard would find event files under `runs/`.
fn check_tensorboard_logs(s: &Scratch, _command: &str) {
    fn any_events(dir: &Path) -> bool {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let p = e.path();
                if p.is_dir() {
                    any_events(&p)
                } else {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("events.out.tfevents.")
                }
            })
    }
    assert!(
        any_events(&s.work.join("runs")),
        "no TensorBoard event file under runs/ for `tensorboard --logdir runs/` to show"
    );
}

/// The same submission with `--dry-run` prints the job script it would
/// submit, with the options given.
fn check_slurm_dry_run(s: &Scratch, command: &str) {
    let dry = format!("{command} --dry-run");
    let out = s.expect(command, &dry, 0);
    for want in [
        "#SBATCH --array=",
        "#SBATCH --partition=cpu",
        "#SBATCH --time=00:10:00",
    ] {
        assert!(
            out.stdout.contains(want),
            "`{dry}` printed no `{want}`:\n{}",
            out.stdout
        );
    }
}

// ----- yaml and python blocks -----

/// Writes a ```yaml block to a file of the scratch folder and validates it:
/// a whole experiment as it is (data paths swapped by [`DATA_STAND_INS`]), a
/// fragment merged into [`FRAGMENT_BASE`].
fn validate_yaml(s: &Scratch, block: &Block) {
    let mut text = block.text();
    let whole = block
        .lines
        .iter()
        .any(|(_, l)| l.starts_with("name:") || l.starts_with("extends:"));
    let mut overrides: Vec<&str> = Vec::new();
    if whole {
        for (data, stand_in, extra) in DATA_STAND_INS {
            if text.contains(data) {
                let stand_in = s.work.join(stand_in);
                text = text.replace(data, stand_in.to_str().unwrap());
                overrides.extend_from_slice(extra);
            }
        }
    } else {
        text = format!("extends: ../{FRAGMENT_BASE}\n{text}");
    }
    let dir = s.work.join("readme-blocks");
    std::fs::create_dir_all(&dir).unwrap();
    let file = format!("readme-blocks/line-{}.yaml", block.line);
    std::fs::write(s.work.join(&file), &text).unwrap();
    let command = format!("shimmer validate {file} {}", overrides.join(" "));
    s.expect(&block.place(), command.trim(), 0);
}

/// A ```python block parses as Python.
fn check_python_syntax(s: &Scratch, block: &Block) {
    let file = s.logs.join(format!("readme-line-{}.py", block.line));
    std::fs::write(&file, block.text()).unwrap();
    let command = format!(
        "python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' {}",
        file.display()
    );
    s.expect(&block.place(), &command, 0);
}

// ----- the tests -----

/// Every ```sh, ```yaml and ```python block, top to bottom in one scratch
/// folder, as a user from a fresh clone would type them.
#[test]
fn readme_commands_and_configs_run_as_shown() {
    let text = readme();
    let blocks = blocks(&text);
    let s = Scratch::new();
    let mut not_run_seen = BTreeSet::new();
    let mut ran = 0;
    for block in &blocks {
        match block.lang.as_str() {
            "sh" => {
                for cmd in shell_commands(block) {
                    let place =
                        format!("README.md line {} (in \"## {}\")", cmd.line, block.section);
                    if let Some(i) = NOT_RUN
                        .iter()
                        .position(|n| same_command(n.command, &cmd.command))
                    {
                        not_run_seen.insert(i);
                        eprintln!("{place}: not run: `{}`: {}", cmd.command, NOT_RUN[i].why);
                        (NOT_RUN[i].check)(&s, &cmd.command);
                        continue;
                    }
                    s.expect(&place, &cmd.command, expected_status(&cmd.comment));
                    ran += 1;
                }
            }
            "yaml" => validate_yaml(&s, block),
            "python" => check_python_syntax(&s, block),
            // Built by `readme_plugin_example_builds_and_loads`.
            "toml" | "rust" => {}
            other => panic!(
                "{}: a ```{other} block, which the README test does not know how to check \
                 (tests/e2e/readme.rs: say how, or name the language)",
                block.place()
            ),
        }
    }
    let stale: Vec<&str> = NOT_RUN
        .iter()
        .enumerate()
        .filter(|(i, _)| !not_run_seen.contains(i))
        .map(|(_, n)| n.command)
        .collect();
    assert!(
        stale.is_empty(),
        "NOT_RUN lists commands the README no longer shows: {stale:?}"
    );
    assert!(ran >= 10, "only {ran} README commands ran");
}

/// Commands compare by their words (the list may wrap a long one).
fn same_command(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// The plugin example (a ```toml Cargo.toml and the ```rust lib.rs after
/// it) builds offline against the checkout's `shimmer-plugin-api`, with the
/// workspace's Cargo.lock, and `shimmer plugins inspect` loads it.
#[test]
fn readme_plugin_example_builds_and_loads() {
    let text = readme();
    let blocks = blocks(&text);
    let mut built = 0;
    let mut manifest: Option<&Block> = None;
    for block in &blocks {
        match block.lang.as_str() {
            "toml" => {
                if let Some(m) = manifest {
                    panic!(
                        "{}: a ```toml block with no ```rust block after it",
                        m.place()
                    );
                }
                manifest = Some(block);
            }
            "rust" => {
                let m = manifest.take().unwrap_or_else(|| {
                    panic!("{}: no ```toml Cargo.toml before it", block.place())
                });
                build_plugin(m, block);
                built += 1;
            }
            _ => {}
        }
    }
    if let Some(m) = manifest {
        panic!(
            "{}: a ```toml block with no ```rust block after it",
            m.place()
        );
    }
    assert!(built > 0, "the README shows no plugin example");
}

fn build_plugin(manifest: &Block, lib: &Block) {
    let checkout = common::workspace_root();
    let tmp = tempfile::tempdir().unwrap();
    let krate = tmp.path().join("plugin");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    // The README's crate sits in the workspace's `plugins/`; here it is on
    // its own, so its path dependency points at the checkout.
    let api = checkout.join("shimmer-plugin-api");
    let toml = manifest.text();
    let dep = toml
        .lines()
        .find(|l| l.trim_start().starts_with("shimmer-plugin-api"))
        .unwrap_or_else(|| panic!("{}: no shimmer-plugin-api dependency", manifest.place()));
    let rel = dep
        .split("path = \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("{}: `{dep}` has no path", manifest.place()));
    let toml = toml.replace(
        &format!("path = \"{rel}\""),
        &format!("path = \"{}\"", api.display()),
    );
    std::fs::write(krate.join("Cargo.toml"), toml).unwrap();
    std::fs::write(krate.join("src/lib.rs"), lib.text()).unwrap();
    std::fs::copy(checkout.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();

    let target = checkout.join("target/readme-plugin");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let s = Scratch::new();
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--message-format=short"])
        .current_dir(&krate)
        .env("CARGO_NET_OFFLINE", "true")
        .env("CARGO_TARGET_DIR", &target);
    let out = s.run(cmd, PLUGIN_BUILD_TIMEOUT);
    let place = format!("{} with {}", lib.place(), manifest.place());
    if out.timed_out {
        panic!(
            "{place}: cargo build ran past {} s\n{}",
            PLUGIN_BUILD_TIMEOUT.as_secs(),
            out.stderr
        );
    }
    assert!(
        out.code == Some(0),
        "{place}: the plugin example does not build:\n{}",
        out.stderr
    );

    let name = toml_package_name(&manifest.text())
        .unwrap_or_else(|| panic!("{}: no [package] name", manifest.place()));
    let file = target.join("debug").join(format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    ));
    assert!(file.is_file(), "{place}: built no {}", file.display());
    // The host loads it: a plugin with its domain kinds.
    let out = common::shimmer()
        .args(["plugins", "inspect"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{place}: `shimmer plugins inspect {}` failed:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.starts_with("plugin ") && shown.contains("kinds"),
        "{place}: inspect shows no plugin:\n{shown}"
    );
}

/// `name = "..."` of a Cargo.toml's `[package]`.
fn toml_package_name(toml: &str) -> Option<String> {
    let mut in_package = false;
    for line in toml.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(v) = line.strip_prefix("name") {
            let v = v.trim_start().strip_prefix('=')?.trim();
            return Some(v.trim_matches('"').to_string());
        }
    }
    None
}

// ----- numbers and the commands that measured them -----

/// Sections whose measurements must name their command.
const MEASURED_SECTIONS: &[&str] = &["Performance", "Simple Shapes"];

/// Units a timing ends with, as a whole word after a number.
const TIME_UNITS: &[&str] = &["s", "ms", "us", "µs", "min", "h"];

/// Whether a README line quotes a measurement: a ratio (`6.91x`: a number
/// right before an `x` that ends the word), a timing (a number, an optional
/// space, then a unit of [`TIME_UNITS`] as a whole word: `12 min 40 s`) or a
/// rate (`/s` ending a word: `steps/s`).
fn quotes_measurement(line: &str) -> bool {
    let ends_word = |rest: &str| !rest.chars().next().is_some_and(char::is_alphanumeric);
    for (i, c) in line.char_indices() {
        let rest = &line[i + c.len_utf8()..];
        if c.is_ascii_digit() {
            if let Some(r) = rest.strip_prefix('x')
                && ends_word(r)
            {
                return true;
            }
            let r = rest.strip_prefix(' ').unwrap_or(rest);
            if TIME_UNITS
                .iter()
                .any(|u| r.strip_prefix(u).is_some_and(ends_word))
            {
                return true;
            }
        }
        if c.is_alphanumeric()
            && let Some(r) = rest.strip_prefix("/s")
            && ends_word(r)
        {
            return true;
        }
    }
    false
}

/// The `scripts/...` paths a line names.
fn named_scripts(line: &str) -> Vec<String> {
    line.match_indices("scripts/")
        .filter(|(i, _)| {
            // `scripts/` itself, not the tail of another path.
            !line[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '/' || c == '_' || c == '-')
        })
        .map(|(i, _)| {
            line[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || "._-/".contains(*c))
                .collect::<String>()
                .trim_end_matches(['.', '/'])
                .to_string()
        })
        .filter(|s| s != "scripts")
        .collect()
}

/// Whether a line names the command that measured something: a
/// `scripts/...` command or a `cargo test`.
fn names_command(line: &str) -> bool {
    !named_scripts(line).is_empty() || line.contains("cargo test")
}

/// The rule: in the sections of `sections`, outside code blocks, every line
/// that [`quotes_measurement`] must name its command ([`names_command`]) on
/// that line or in its paragraph (lines up to the next blank line); a table's
/// paragraph also takes in the paragraph right before the table, its
/// caption. Returns `(line number, line)` of each measurement left without a
/// command, and how many measurement lines there were.
fn unsourced_measurements(text: &str, sections: &[&str]) -> (Vec<(usize, String)>, usize) {
    // Paragraphs of the chosen sections: (is a table, lines).
    let mut paragraphs = Vec::new();
    let mut current = Vec::new();
    let mut in_section = false;
    let mut in_code = false;
    type Paragraph<'t> = (bool, Vec<(usize, &'t str)>);
    fn flush<'t>(current: &mut Vec<(usize, &'t str)>, paragraphs: &mut Vec<Paragraph<'t>>) {
        if !current.is_empty() {
            let table = current.iter().all(|(_, l)| l.trim_start().starts_with('|'));
            paragraphs.push((table, std::mem::take(current)));
        }
    }
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            flush(&mut current, &mut paragraphs);
            continue;
        }
        if in_code {
            continue;
        }
        if let Some(h) = line.strip_prefix("## ") {
            flush(&mut current, &mut paragraphs);
            in_section = sections.contains(&h.trim());
            continue;
        }
        if !in_section {
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut current, &mut paragraphs);
        } else {
            current.push((i + 1, line));
        }
    }
    flush(&mut current, &mut paragraphs);

    let mut unsourced = Vec::new();
    let mut measured = 0;
    for (k, (table, lines)) in paragraphs.iter().enumerate() {
        let mut sourced = lines.iter().any(|(_, l)| names_command(l));
        if *table && k > 0 && !paragraphs[k - 1].0 {
            sourced |= paragraphs[k - 1].1.iter().any(|(_, l)| names_command(l));
        }
        for (n, l) in lines {
            if quotes_measurement(l) {
                measured += 1;
                if !sourced {
                    unsourced.push((*n, l.to_string()));
                }
            }
        }
    }
    (unsourced, measured)
}

/// Every ratio, timing and rate quoted in the measured sections says which
/// command measured it, and the scripts named there exist.
#[test]
fn readme_numbers_name_the_command_that_measured_them() {
    let text = readme();
    let (unsourced, measured) = unsourced_measurements(&text, MEASURED_SECTIONS);
    let mut msg = String::new();
    for (n, l) in &unsourced {
        writeln!(msg, "README.md line {n}: {l}").unwrap();
    }
    assert!(
        unsourced.is_empty(),
        "these numbers do not say the command that measured them (name a `scripts/...` \
         command on the line, in its paragraph or in the caption of its table):\n{msg}"
    );
    assert!(
        measured >= 6,
        "only {measured} measurements found in {MEASURED_SECTIONS:?}: is the README parsed right?"
    );
    // Every script the README names exists, so a command that measured
    // something can be run again.
    for (i, line) in text.lines().enumerate() {
        for script in named_scripts(line) {
            assert!(
                common::workspace_root().join(&script).exists(),
                "README.md line {}: names {script}, which does not exist",
                i + 1
            );
        }
    }
}

/// The rule above flags a number without its command, and accepts one whose
/// line, paragraph or table caption names it.
#[test]
fn readme_number_rule_flags_an_unsourced_number() {
    let text = "## Performance\n\
                \n\
                Kernels are 3.2x faster than before.\n\
                A step takes 12 ms on one thread.\n\
                Loading runs at 900 items/s.\n\
                \n\
                Measured by `scripts/bench`: 2.0x over PyTorch,\n\
                and 45 steps/s on its own.\n\
                \n\
                `scripts/bench` prints:\n\
                \n\
                | w | ratio |\n\
                |---|---|\n\
                | W1 | 6.91x |\n\
                \n\
                | w | ratio |\n\
                |---|---|\n\
                | W2 | 4.58x |\n\
                \n\
                A 32x32 image, 3 x 32 x 32 values; 7 groups x 2048; scripts/simple-shapes.\n\
                \n\
                ## Other\n\
                \n\
                Watchdog: 300 s.\n";
    let (unsourced, measured) = unsourced_measurements(text, &["Performance"]);
    let lines: Vec<usize> = unsourced.iter().map(|(n, _)| *n).collect();
    // The first paragraph's three lines, and the second table (its caption
    // is a table, not a paragraph naming a command).
    assert_eq!(lines, vec![3, 4, 5, 18], "{unsourced:?}");
    assert_eq!(measured, 7);
    assert!(!quotes_measurement(
        "a black 32x32 image, 3 x 32 x 32 values"
    ));
    assert!(!quotes_measurement("see scripts/simple-shapes and x86-64"));
    assert!(quotes_measurement("(12 min 40 s in all"));
    assert!(quotes_measurement("| 1.25x |"));
    assert_eq!(
        named_scripts("(`scripts/reference/vae_reference.py`), `WORKLOADS=vae scripts/bench`."),
        vec!["scripts/reference/vae_reference.py", "scripts/bench"]
    );
}

/// Every `cargo test --test e2e FILTER` the README cites (for a number it
/// measured, or a behaviour it checks) selects at least one test.
#[test]
fn readme_cited_tests_exist() {
    let text = readme();
    let mut cited = 0;
    for (i, line) in text.lines().enumerate() {
        for span in line.split('`').skip(1).step_by(2) {
            let words: Vec<&str> = span.split_whitespace().collect();
            if words.get(..2) != Some(&["cargo", "test"][..]) {
                continue;
            }
            let Some(t) = words.iter().position(|w| *w == "--test") else {
                continue;
            };
            let place = format!("README.md line {}: `{span}`", i + 1);
            assert_eq!(
                words.get(t + 1),
                Some(&"e2e"),
                "{place}: the end-to-end tests are one test target, `--test e2e`"
            );
            let Some(filter) = words.get(t + 2).filter(|w| !w.starts_with('-')) else {
                continue;
            };
            let out = Command::new(std::env::current_exe().unwrap())
                .args(["--list", filter])
                .output()
                .unwrap();
            let listed = String::from_utf8_lossy(&out.stdout);
            assert!(
                listed.lines().any(|l| l.ends_with(": test")),
                "{place}: the filter `{filter}` selects no test"
            );
            cited += 1;
        }
    }
    assert!(cited > 0, "the README cites no test by name");
}

/// Command lines split as bash reads them: comments after a blank-preceded
/// `#` outside quotes, `\` continuations joined, an exit status from the
/// comment.
#[test]
fn readme_shell_lines_split_as_bash_reads_them() {
    let block = blocks(
        "## S\n\
         ```sh\n\
         shimmer plugins inspect x --config '{\"a\": \"#1\"}'   # what # it shows\n\
         \n\
         # a comment line\n\
         shimmer run exp.yaml \\\n\
         \x20   --run-dir a#b   # joined\n\
         shimmer validate bad.yaml   # refused (exit status 2)\n\
         ```\n",
    );
    assert_eq!(block.len(), 1);
    assert_eq!(block[0].lang, "sh");
    assert_eq!(block[0].section, "S");
    let cmds = shell_commands(&block[0]);
    let got: Vec<(usize, &str, &str)> = cmds
        .iter()
        .map(|c| (c.line, c.command.as_str(), c.comment.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                3,
                "shimmer plugins inspect x --config '{\"a\": \"#1\"}'",
                "what # it shows"
            ),
            (6, "shimmer run exp.yaml --run-dir a#b", "joined"),
            (8, "shimmer validate bad.yaml", "refused (exit status 2)"),
        ]
    );
    assert_eq!(expected_status(&cmds[0].comment), 0);
    assert_eq!(expected_status(&cmds[2].comment), 2);
}
