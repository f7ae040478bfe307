//! End-to-end: what shimmer refuses (README, "What shimmer refuses, and
//! why"). Every refusal exits with status 2 and one `error:` line naming
//! the key or file at fault, within a bounded time and memory (measured:
//! the peak resident memory of the process, from `wait4`); and what two
//! processes on one run folder, a changed frozen checkpoint or a resume
//! with new settings get.

use crate::common;
use crate::run::{assert_clear_failure, pretrained, run_args, stderr, tutorial_args};

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longest any refusal may take: a bound far above what it needs (well
/// under a second), so a runaway input fails the test on any machine.
const TIME_LIMIT: Duration = Duration::from_secs(60);
/// Most resident memory a refused command may reach.
const MEMORY_LIMIT_KIB: u64 = 512 * 1024;

/// A finished command, with its peak resident memory.
pub(crate) struct Measured {
    pub(crate) out: Output,
    pub(crate) peak_kib: u64,
}

/// Runs `cmd` to its end (killed past [`TIME_LIMIT`]), reaping it with
/// `wait4` to read its peak resident memory.
pub(crate) fn measured(cmd: &mut Command) -> Measured {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shimmer");
    let pid = child.id() as libc::pid_t;
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let read_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut out_pipe, &mut b).ok();
        b
    });
    let read_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut err_pipe, &mut b).ok();
        b
    });
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::SeqCst) {
                if start.elapsed() > TIME_LIMIT {
                    // SAFETY: `pid` is our unreaped child, so the id is not reused.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })
    };
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; both pointers are valid.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4 failed");
    done.store(true, Ordering::SeqCst);
    let killed = watchdog.join().unwrap();
    let out = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: read_out.join().unwrap(),
        stderr: read_err.join().unwrap(),
    };
    assert!(
        !killed,
        "still running after {TIME_LIMIT:?}: {}",
        stderr(&out)
    );
    // The child is reaped: std must not wait for it again.
    std::mem::forget(child);
    Measured {
        out,
        peak_kib: usage.ru_maxrss as u64,
    }
}

/// `shimmer <args>` from the repository root must be refused: status 2,
/// the last line an error containing every needle, no panic, within the
/// time and memory bounds.
pub(crate) fn refused(args: &[&str], needles: &[&str]) -> Measured {
    let m = measured(
        common::shimmer()
            .args(args)
            .current_dir(common::workspace_root()),
    );
    assert_clear_failure(&m.out, needles);
    assert_eq!(m.out.status.code(), Some(2), "{args:?}: {}", stderr(&m.out));
    assert!(
        m.peak_kib < MEMORY_LIMIT_KIB,
        "{args:?} reached {} KiB: {}",
        m.peak_kib,
        stderr(&m.out)
    );
    m
}

pub(crate) fn tutorial() -> String {
    common::workspace_root()
        .join("experiments/tutorial/gw.yaml")
        .display()
        .to_string()
}

/// `validate` of the tutorial with the pretrained domains and `extra`.
pub(crate) fn validate_args(extra: &[&str]) -> Vec<String> {
    let mut args = vec!["validate".to_string(), tutorial()];
    args.extend(pretrained().iter().cloned());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

pub(crate) fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn alias_bombs_and_doubling_references_are_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    // Ten levels, each naming the previous ten times: 10^10 values expanded.
    let mut bomb = String::from("name: bomb\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let bomb = write(tmp.path(), "bomb.yaml", &bomb);
    // Thirty doublings: a 2^30-character string.
    let mut doubling = String::from("name: doubling\nvars:\n  k0: xxxxxxxx\n");
    for i in 1..=30 {
        doubling.push_str(&format!(
            "  k{i}: \"${{vars.k{0}}}${{vars.k{0}}}\"\n",
            i - 1
        ));
    }
    let doubling = write(tmp.path(), "doubling.yaml", &doubling);
    for file in [&bomb, &doubling] {
        let f = file.to_str().unwrap();
        for command in ["validate", "run"] {
            refused(&[command, f], &[f]);
        }
    }
}

#[test]
fn special_files_are_refused_unread() {
    let tmp = tempfile::tempdir().unwrap();
    refused(
        &["validate", "/dev/zero"],
        &["/dev/zero", "not a regular file"],
    );
    let extends = write(tmp.path(), "e.yaml", "extends: /dev/zero\nname: e\n");
    refused(
        &["validate", extends.to_str().unwrap()],
        &["/dev/zero", "not a regular file"],
    );
    let link = tmp.path().join("weights.safetensors");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let args = validate_args(&[&format!(
        "domains.domain1.model.checkpoint={}",
        link.display()
    )]);
    refused(
        &strs(&args),
        &[link.to_str().unwrap(), "not a regular file"],
    );
}

#[test]
fn out_of_range_settings_are_refused_at_their_key() {
    for (setting, key) in [
        ("workspace.dim=0", "workspace.dim"),
        ("workspace.dim=4294967297", "workspace.dim"),
        ("workspace.dim=100000000", "workspace.dim"),
        ("workspace.encoders.hidden=0", "workspace.encoders.hidden"),
        (
            "workspace.encoders.n_layers=100000",
            "workspace.encoders.n_layers",
        ),
        ("data.workers=100000", "data.workers"),
        ("data.batch_size=0", "data.batch_size"),
        ("optim.lr=-1", "optim.lr"),
        ("optim.lr=.nan", "optim.lr"),
        ("optim.lr=.inf", "optim.lr"),
        ("training.gradient_clip=-1", "training.gradient_clip"),
    ] {
        let args = validate_args(&[setting]);
        // The experiment file and line of the key (an override's: its text).
        refused(&strs(&args), &[key, "out of range", setting]);
    }
    // What the plugin then reports, and a model that cannot fit.
    let args = validate_args(&["domains.domain1.config.train=18446744073709551615"]);
    refused(&strs(&args), &["domain1", "18446744073709551615 items"]);
    let args = validate_args(&[
        "workspace.dim=60000",
        "workspace.encoders.hidden=60000",
        "workspace.decoders.hidden=60000",
    ]);
    refused(&strs(&args), &["GiB of memory", "is available"]);
}

#[test]
fn misspelt_loss_weights_and_monitors_are_refused_at_validate() {
    let args = validate_args(&["domains.domain1.loss=[{start: 0, len: 4, kind: mse, \
         weights: {demi_cycle: 1, cycle: 1, tranlsation: 1, fused: 1}}]"]);
    refused(&strs(&args), &["tranlsation", "translation"]);
    let args = validate_args(&["training.monitor=val/los"]);
    refused(&strs(&args), &["training.monitor", "val/los", "val/loss"]);
    let args = validate_args(&["training.early_stopping={monitor: val/x}"]);
    refused(&strs(&args), &["training.early_stopping.monitor", "val/x"]);
}

#[test]
fn names_that_would_leave_runs_dir_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let escaped = tmp.path().join("escaped");
    for name in [
        format!("name=../../../..{}", escaped.display()),
        format!("name={}", escaped.display()),
        "name=..".to_string(),
        "name=''".to_string(),
    ] {
        let args = validate_args(&[&name]);
        refused(&strs(&args), &["name"]);
    }
    assert!(!escaped.exists());
}

/// A tutorial run in `dir` that trains long (no schedule tied to its
/// length), started in the background; returns once it is training.
fn start_long_run(dir: &Path) -> std::process::Child {
    let child = common::shimmer()
        .arg("run")
        .args(tutorial_args(
            dir,
            &[
                "training.max_epochs=100000",
                "training.val_every_n_epochs=1000",
                "training.checkpoint_every_n_steps=5",
                "optim.scheduler.type=none",
            ],
        ))
        .current_dir(common::workspace_root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let last = dir.join("checkpoints/last.safetensors");
    let start = Instant::now();
    while !last.exists() {
        assert!(start.elapsed() < TIME_LIMIT, "the run never checkpointed");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

#[test]
fn a_training_run_folder_belongs_to_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut first = start_long_run(&dir);
    let d = dir.to_str().unwrap();
    let in_use = format!("run folder {d} is in use (pid {})", first.id());
    refused(&["run", "--resume", d], &[&in_use]);
    let mut again = tutorial_args(&dir, &[]);
    again.insert(0, "run".to_string());
    refused(&strs(&again), &["already exists and is not empty"]);
    // SIGKILL: the kernel drops the lock with the process.
    first.kill().unwrap();
    first.wait().unwrap();
    // A stale temporary file, as a write cut by the kill leaves.
    let stale = dir.join("checkpoints/.last.safetensors.x1y2.tmp");
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();

    // Training length and cadences may change on resume, and are recorded.
    let out = common::shimmer()
        .args(["run", "--resume", d, "training.max_epochs=2"])
        .current_dir(common::workspace_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stale.exists(), "the stale temporary file is removed");
    assert!(
        stderr(&out).contains("training.max_epochs: 100000 -> 2"),
        "{}",
        stderr(&out)
    );
    let config = std::fs::read_to_string(dir.join("config.yaml")).unwrap();
    assert!(
        config.starts_with("# --resume (unix time ")
            && config.contains("training.max_epochs: 100000 -> 2"),
        "{config}"
    );
    let changed: shimmer_config::Experiment =
        shimmer_config::parse(&config, &dir.join("config.yaml")).unwrap();
    assert_eq!(changed.training.max_epochs, Some(2));
    // Anything else is refused, naming what may change.
    refused(
        &["run", "--resume", d, "optim.lr=0.1"],
        &["`optim.lr` cannot change on resume", "training.max_steps"],
    );
}

/// sha256 of a file, as Python's hashlib computes it.
fn python_sha256(path: &Path) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest())",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_run_records_its_provenance_and_refuses_a_changed_frozen_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    // A private copy of domain 1's encoder, rewritten after the run.
    let original = pretrained()[0].split_once('=').unwrap().1.to_string();
    let weights = tmp.path().join("domain1.safetensors");
    std::fs::copy(&original, &weights).unwrap();
    let dir = tmp.path().join("run");
    let own = format!("domains.domain1.model.checkpoint={}", weights.display());
    let out = run_args(&tutorial_args(&dir, &[&own]));
    assert!(out.status.success(), "{}", stderr(&out));

    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("provenance.json")).unwrap()).unwrap();
    let plugin = common::plugin_path("random_vectors");
    assert_eq!(record["plugins"]["domain1"]["plugin"], "random-vectors");
    assert_eq!(
        record["plugins"]["domain1"]["sha256"],
        python_sha256(&plugin)
    );
    assert_eq!(
        record["checkpoints"]["domain1"]["sha256"],
        python_sha256(&weights)
    );
    assert_eq!(
        record["host"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{record}"
    );
    let commit = record["host"]["commit"].as_str().unwrap();
    assert!(!commit.is_empty(), "{record}");
    let version = common::shimmer().arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(version.contains(&format!("commit {commit}")), "{version}");
    assert!(version.contains("features: fused-kernels"), "{version}");

    // The encoder is retrained over the same file with another seed:
    // evaluation and resume refuse it until allowed.
    let pretrain = common::workspace_root().join("experiments/tutorial/pretrain_domain1.yaml");
    let out = common::shimmer()
        .arg("run")
        .arg(&pretrain)
        .arg("--run-dir")
        .arg(tmp.path().join("pretrain"))
        .arg("seed=5")
        .arg(format!("pretrain.save_to={}", weights.display()))
        .current_dir(common::workspace_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let d = dir.to_str().unwrap();
    refused(
        &["test", d],
        &[weights.to_str().unwrap(), "--allow-changed-checkpoints"],
    );
    refused(&["run", "--resume", d], &["--allow-changed-checkpoints"]);
    let out = common::shimmer()
        .args(["test", d, "--allow-changed-checkpoints"])
        .current_dir(common::workspace_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("note: domain `domain1`: checkpoint"),
        "{}",
        stderr(&out)
    );

    // Deleting the record does not turn the check off.
    std::fs::remove_file(dir.join("provenance.json")).unwrap();
    let missing = "has no provenance.json";
    refused(&["test", d], &[d, missing, "--allow-changed-checkpoints"]);
    refused(&["run", "--resume", d], &[d, missing]);
    let x = tmp.path().join("x.safetensors");
    refused(&["export", d, "--out", x.to_str().unwrap()], &[d, missing]);
    let out = common::shimmer()
        .args(["test", d, "--allow-changed-checkpoints"])
        .current_dir(common::workspace_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn plugin_messages_name_what_the_user_wrote() {
    // Without --config: the plugin's facts, and what its domain needs.
    let out = common::shimmer()
        .args(["plugins", "inspect", "random-vectors"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("plugin  random-vectors")
            && text.contains("kinds   vectors")
            && text.contains("needs a config")
            && text.contains("missing field `dim`"),
        "{text}"
    );

    // plugins.paths is taken from the experiment's folder, not the working one.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("libs")).unwrap();
    std::fs::copy(
        common::plugin_path("random_vectors"),
        tmp.path().join("libs/libmy_vectors.so"),
    )
    .unwrap();
    let exp = write(
        tmp.path(),
        "exp.yaml",
        "name: paths\nplugins: { paths: [libs] }\ndomains:\n  \
         a: { plugin: my-vectors, config: { dim: 3 } }\n  \
         b: { plugin: my-vectors, config: { dim: x } }\n\
         workspace: { flavour: two_domains, dim: 4 }\n\
         data: { batch_size: 4, groups: [{ domains: [a, b], items: { count: 8 } }] }\n\
         training: { max_steps: 2 }\n",
    );
    let e = exp.to_str().unwrap();
    // The plugin refuses `dim: x`: the error is at that YAML key.
    refused(
        &["validate", e],
        &[&format!("{e}:5:"), "domains.b.config.dim", "expected usize"],
    );
    let m = refused(
        &["validate", e, "domains.a.plugin=missing"],
        &["libmissing.so"],
    );
    let libs = tmp.path().join("libs");
    assert!(
        stderr(&m.out).contains(&format!("in: {}", libs.display())),
        "absolute folders: {}",
        stderr(&m.out)
    );
    let out = common::shimmer()
        .args(["validate", e, "domains.b.config.dim=5"])
        .current_dir(common::workspace_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // The loader's own words, said once.
    let bad = write(tmp.path(), "libbad.so", "not ELF\n");
    let m = refused(
        &["plugins", "inspect", bad.to_str().unwrap()],
        &["is not a loadable shared library", "file too short"],
    );
    let missing = tmp.path().join("libnone.so");
    let m2 = refused(
        &["plugins", "inspect", missing.to_str().unwrap()],
        &["No such file or directory"],
    );
    assert_eq!(stderr(&m.out).matches("file too short").count(), 1);
    assert_eq!(stderr(&m2.out).matches("No such file").count(), 1);
}

/// The lines a child writes to stderr, read on a thread of their own so
/// a test can wait for one while the child runs.
struct StderrLines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: String,
}

impl StderrLines {
    /// Takes `child`'s piped stderr.
    fn of(child: &mut std::process::Child) -> Self {
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(err)).map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        Self {
            rx,
            seen: String::new(),
        }
    }

    /// Everything read once a line holds `needle` (fails past [`TIME_LIMIT`]).
    fn wait_for(&mut self, needle: &str) -> String {
        let start = Instant::now();
        while !self.seen.contains(needle) {
            assert!(
                start.elapsed() < TIME_LIMIT,
                "no `{needle}` in: {}",
                self.seen
            );
            if let Ok(line) = self.rx.recv_timeout(Duration::from_millis(100)) {
                self.seen.push_str(&line);
                self.seen.push('\n');
            }
        }
        self.seen.clone()
    }

    /// Everything, once the child closed its stderr.
    fn rest(mut self) -> String {
        while let Ok(line) = self.rx.recv_timeout(Duration::from_secs(5)) {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        self.seen
    }
}

#[test]
fn a_hung_plugin_is_named_and_a_second_ctrl_c_ends_the_run_on_record() {
    let tmp = tempfile::tempdir().unwrap();
    let faulty = common::plugin_path("faulty_plugin");
    let exp = write(
        tmp.path(),
        "hang.yaml",
        &format!(
            "name: hang\ndomains:\n  \
             a: {{ plugin: {}, config: {{ dim: 4, items: 64, hang_on: 20 }} }}\n  \
             b: {{ plugin: random-vectors, config: {{ dim: 3, train: 64, val: 64, test: 64 }} }}\n\
             workspace: {{ flavour: two_domains, dim: 4 }}\n\
             data:\n  batch_size: 8\n  shuffle: false\n  workers: 1\n  cache: {{ enabled: false }}\n  \
             groups: [ {{ domains: [a, b] }} ]\n  \
             val: [ {{ domains: [a, b], items: {{ range: [0, 8] }} }} ]\n  \
             test: [ {{ domains: [a, b], items: {{ range: [0, 8] }} }} ]\n\
             training: {{ max_epochs: 2, watchdog_s: 1 }}\n",
            faulty.display()
        ),
    );
    let dir = tmp.path().join("run");
    let mut child = common::shimmer()
        .args([
            "run",
            exp.to_str().unwrap(),
            "--run-dir",
            dir.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = StderrLines::of(&mut child);
    let mut wait_for = |needle: &str| lines.wait_for(needle);
    let hung = "plugin `faulty` (domain `faulty`): load of 8 train items (16, 17, 18, 19, ...)";
    let said = wait_for("warning: still waiting after");
    assert!(said.contains(hung), "{said}");
    let sigint = || {
        // SAFETY: signals our own child, not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    };
    sigint();
    let said = wait_for("Ctrl-C again ends at once");
    assert!(
        said.contains(&format!("SIGINT (Ctrl-C): stopping after {hung}")),
        "{said}"
    );
    sigint();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let said = wait_for("second Ctrl-C: ending now");
    assert!(said.contains(hung), "{said}");
    // Hung before its first checkpoint: no resume is offered.
    let nothing = format!(
        "no checkpoint was written yet, so {} has nothing to resume",
        dir.display()
    );
    let said = wait_for(&nothing);
    assert!(!said.contains("--resume"), "{said}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "interrupted");
    assert!(
        summary["error"].as_str().unwrap().contains("second Ctrl-C")
            && summary["error"].as_str().unwrap().contains(&nothing),
        "{summary}"
    );
}

#[test]
fn a_checkpoint_whose_bytes_changed_is_refused_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = run_args(&tutorial_args(&dir, &["training.max_epochs=1"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let last = dir.join("checkpoints/last.safetensors");
    let mut bytes = std::fs::read(&last).unwrap();
    let at = bytes.len() - 5;
    bytes[at] ^= 0x40;
    std::fs::write(&last, bytes).unwrap();
    refused(
        &["run", "--resume", dir.to_str().unwrap()],
        &[last.to_str().unwrap(), "is corrupt"],
    );
}

#[test]
fn outputs_never_replace_special_files_links_or_the_runs_own_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = run_args(&tutorial_args(&dir, &["training.max_epochs=1"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let fifo = tmp.path().join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let link = tmp.path().join("link.safetensors");
    let target = tmp.path().join("target.safetensors");
    std::fs::write(&target, b"keep").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let d = dir.to_str().unwrap();
    let own = [
        dir.join("config.yaml"),
        dir.join("summary.json"),
        dir.join("checkpoints/last.safetensors"),
        dir.join("scalars.jsonl"),
        // The same file, named through a path with `..` in it.
        dir.join("checkpoints/../config.yaml"),
    ];
    let cases: Vec<(PathBuf, &str)> = [
        (PathBuf::from("/dev/null"), "a character device"),
        (fifo.clone(), "a FIFO"),
        (link.clone(), "is a symbolic link"),
        (tmp.path().to_path_buf(), "a folder"),
    ]
    .into_iter()
    .chain(own.iter().map(|p| (p.clone(), "of the run")))
    .collect();
    // Reads regular files only (a FIFO would block the reader).
    let contents = |p: &Path| {
        std::fs::symlink_metadata(p)
            .is_ok_and(|m| m.is_file())
            .then(|| std::fs::read(p).unwrap())
    };
    for (path, why) in &cases {
        let before = contents(path);
        let p = path.to_str().unwrap();
        refused(&["export", d, "--out", p], &[p, why]);
        refused(&["predict", d, "--out", p], &[p, why]);
        assert_eq!(contents(path), before, "{p} changed");
    }
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    // The run still resumes, tests and exports where it may.
    let fine = tmp.path().join("weights.safetensors");
    let out = common::shimmer()
        .args(["export", d, "--out", fine.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fine.is_file());
}

/// SIGTERM while a slow plugin's latent cache is built (Slurm's time
/// limit, with `KillWait` to come) ends the build after the block in
/// flight, before a run folder exists or a step is trained.
#[test]
fn sigterm_during_the_latent_cache_build_ends_it_within_a_block() {
    let tmp = tempfile::tempdir().unwrap();
    let faulty = common::plugin_path("faulty_plugin");
    let exp = write(
        tmp.path(),
        "slow.yaml",
        &format!(
            "name: slow\ndomains:\n  \
             a: {{ plugin: {}, config: {{ dim: 4, items: 8192, hang_on: 1500, hang_s: 4 }} }}\n  \
             b: {{ plugin: random-vectors, config: {{ dim: 3, train: 8192, val: 64, test: 64 }} }}\n\
             workspace: {{ flavour: two_domains, dim: 4 }}\n\
             data:\n  batch_size: 8\n  workers: 1\n  \
             groups: [ {{ domains: [a, b] }} ]\n  \
             val: [ {{ domains: [a, b], items: {{ range: [0, 8] }} }} ]\n  \
             test: [ {{ domains: [a, b], items: {{ range: [0, 8] }} }} ]\n\
             training: {{ max_epochs: 2, watchdog_s: 1 }}\n",
            faulty.display()
        ),
    );
    let dir = tmp.path().join("run");
    let mut child = common::shimmer()
        .args(["run", exp.to_str().unwrap(), "--run-dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = StderrLines::of(&mut child);
    // The watchdog names the block in flight once it waited a second.
    lines.wait_for("warning: still waiting after");
    // SAFETY: signals our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let seen = lines.rest();
    assert_eq!(status.code(), Some(143), "{seen}");
    let last = seen.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error:")
            && last.contains("stopped by SIGTERM while building the latent cache of domain `a`"),
        "{seen}"
    );
    assert!(!dir.exists(), "a run folder was written: {seen}");
}
