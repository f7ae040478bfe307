//! End-to-end: `shimmer run --watch` swaps a plugin rebuilt mid-run (the
//! batches the trainer saw switch from the old build to the new one at the
//! logged step, no step lost or repeated), refuses broken rebuilds (the run
//! finishes on the old build and says why), and reloading a plugin 100
//! times in one process keeps the thread count flat and memory growth
//! within the library's mapped size per reload. Also: `--resume` with
//! `--set-plugin` records the new plugin in the run's config.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Training steps of a watched run: long enough (each step loads the
/// versioned domain twice, 2 ms each) for a rebuild to land mid-run.
const STEPS: u64 = 2500;

/// A private copy of the `versioned-plugin` fixture crate, built into the
/// workspace target folder under its own crate name, so rebuilding it with
/// other constants touches neither the repository nor other tests.
struct TempPlugin {
    dir: tempfile::TempDir,
    lib_name: String,
}

impl TempPlugin {
    fn new(lib_name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = common::workspace_root();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::copy(
            root.join("tests/fixtures/versioned-plugin/src/lib.rs"),
            dir.path().join("src/lib.rs"),
        )
        .unwrap();
        std::fs::copy(root.join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();
        // Same profile as the workspace: its compiled dependencies are reused.
        let manifest = format!(
            "[package]\nname = \"{}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [lib]\nname = \"{lib_name}\"\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nshimmer-plugin-api = {{ path = \"{}\" }}\n\
             serde = {{ version = \"1\", features = [\"derive\"] }}\n\n\
             [profile.dev.package.\"*\"]\nopt-level = 2\n\n[workspace]\n",
            lib_name.replace('_', "-"),
            root.join("shimmer-plugin-api").display()
        );
        std::fs::write(dir.path().join("Cargo.toml"), manifest).unwrap();
        Self {
            dir,
            lib_name: lib_name.to_string(),
        }
    }

    /// Replaces the line `const NAME: ...` of the fixture with `value`.
    fn set(&self, name: &str, value: &str) {
        let file = self.dir.path().join("src/lib.rs");
        let text = std::fs::read_to_string(&file).unwrap();
        let prefix = format!("const {name}: ");
        let mut found = false;
        let out: Vec<String> = text
            .lines()
            .map(|l| {
                if let Some(rest) = l.strip_prefix(&prefix) {
                    found = true;
                    let ty = rest.split_once(" =").map(|(t, _)| t).unwrap_or(rest);
                    format!("{prefix}{ty} = {value};")
                } else {
                    l.to_string()
                }
            })
            .collect();
        assert!(found, "fixture has no `const {name}`");
        std::fs::write(&file, out.join("\n") + "\n").unwrap();
    }

    fn target_root() -> PathBuf {
        common::target_dir().parent().unwrap().to_path_buf()
    }

    /// Builds in place (cargo replaces the library file).
    fn build(&self) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let out = Command::new(cargo)
            .args(["build", "--quiet", "--offline", "--target-dir"])
            .arg(Self::target_root())
            .current_dir(self.dir.path())
            .output()
            .expect("run cargo build");
        assert!(
            out.status.success(),
            "building the fixture copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn lib_path(&self) -> PathBuf {
        Self::target_root().join("debug").join(format!(
            "{}{}{}",
            std::env::consts::DLL_PREFIX,
            self.lib_name,
            std::env::consts::DLL_SUFFIX
        ))
    }
}

/// A watched run in a temp folder, its stderr and batch trace in files.
struct WatchedRun {
    tmp: tempfile::TempDir,
    child: Child,
}

impl WatchedRun {
    fn start(plugin: &Path, extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let exp = tmp.path().join("exp.yaml");
        std::fs::write(
            &exp,
            format!(
                "name: hotswap\n\
                 domains:\n  \
                   a: {{ plugin: {}, config: {{ dim: 4, items: 64, delay_ms: 2 }} }}\n  \
                   b: {{ plugin: random-vectors, config: {{ dim: 3, train: 64, val: 16, test: 16 }} }}\n\
                 workspace: {{ flavour: two_domains, dim: 4 }}\n\
                 data:\n  batch_size: 8\n  shuffle: false\n  workers: 0\n  cache: {{ enabled: false }}\n  \
                   groups: [ {{ domains: [a, b] }}, {{ domains: [a] }}, {{ domains: [b] }} ]\n\
                 training: {{ max_steps: {STEPS}, val_every_n_epochs: 50, log_every_n_steps: 100 }}\n",
                plugin.display()
            ),
        )
        .unwrap();
        let stderr = std::fs::File::create(tmp.path().join("stderr.txt")).unwrap();
        let child = common::shimmer()
            .arg("run")
            .arg(&exp)
            .arg("--run-dir")
            .arg(tmp.path().join("run"))
            .arg("--watch")
            .args(extra)
            .env(
                shimmer_host::hotswap::TRACE_ENV,
                tmp.path().join("trace.jsonl"),
            )
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start shimmer run");
        Self { tmp, child }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("stderr.txt")).unwrap_or_default()
    }

    fn trace(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.tmp.path().join("trace.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `ready` holds, failing with the log after `limit`.
    fn wait_for(&mut self, what: &str, limit: Duration, ready: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        while !ready(self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the run ended ({status}) before {what}:\n{}", self.stderr());
            }
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the run to end and checks it succeeded.
    fn finish(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the run failed:\n{}", self.stderr());
                return;
            }
            if start.elapsed() > Duration::from_secs(240) {
                let _ = self.child.kill();
                panic!("the run did not finish:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn scalars(&self, tag: &str) -> Vec<(i64, f64)> {
        std::fs::read_to_string(self.tmp.path().join("run/scalars.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["tag"] == tag)
            .map(|v| (v["step"].as_i64().unwrap(), v["value"].as_f64().unwrap()))
            .collect()
    }
}

impl Drop for WatchedRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The build constant of domain `a` in every traced step, checking that
/// steps are 0, 1, 2, ... with their epoch and batch, and that every row
/// of a step comes from the same build.
fn constants_by_step(trace: &[serde_json::Value]) -> Vec<i64> {
    let batches_per_epoch = 8; // 64 items, batches of 8, min-size mode
    trace
        .iter()
        .enumerate()
        .map(|(s, line)| {
            assert_eq!(line["step"], s as u64, "step lost or repeated: {line}");
            assert_eq!(line["epoch"], (s / batches_per_epoch) as u64, "{line}");
            assert_eq!(line["batch"], (s % batches_per_epoch) as u64, "{line}");
            let mut constants = Vec::new();
            for group in ["a,b", "a"] {
                let g = &line["groups"][group];
                let items = g["items"].as_array().unwrap();
                let firsts = g["first"]["a"].as_array().unwrap();
                assert_eq!(items.len(), firsts.len());
                for (i, v) in items.iter().zip(firsts) {
                    let c = v.as_f64().unwrap() - i.as_f64().unwrap() / 1000.0;
                    assert!((c - c.round()).abs() < 1e-4, "not a build constant: {line}");
                    constants.push(c.round() as i64);
                }
            }
            assert!(
                constants.windows(2).all(|w| w[0] == w[1]),
                "step {s} mixes builds: {constants:?}"
            );
            constants[0]
        })
        .collect()
}

/// The step of `step N: hot-swap: ...` lines containing `needle`.
fn logged_steps(stderr: &str, needle: &str) -> Vec<u64> {
    stderr
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.strip_prefix("step ")?.split(':').next()?.parse().ok())
        .collect()
}

#[test]
fn a_rebuilt_plugin_is_swapped_in_at_a_step_boundary() {
    let plugin = TempPlugin::new("versioned_e2e_swap");
    plugin.build();
    let mut run = WatchedRun::start(&plugin.lib_path(), &[]);
    run.wait_for("30 steps", Duration::from_secs(120), |r| {
        r.trace().len() >= 30
    });
    plugin.set("CONSTANT", "2.0");
    plugin.set("VERSION", "\"0.1.0+build2\"");
    plugin.build();
    run.wait_for("the swap", Duration::from_secs(60), |r| {
        r.stderr().contains("now loads from")
    });
    run.finish();

    let stderr = run.stderr();
    let swaps = logged_steps(
        &stderr,
        "domain `a` now loads from plugin versioned 0.1.0+build2",
    );
    assert_eq!(swaps.len(), 1, "{stderr}");
    let swap = swaps[0];
    assert!(
        stderr.contains("(generation 1,") && stderr.contains("generation 0 released"),
        "{stderr}"
    );
    let constants = constants_by_step(&run.trace());
    assert_eq!(constants.len() as u64, STEPS, "every step traced once");
    // With `workers: 0` the step right after the swap is the first new batch.
    assert!(swap >= 30 && swap < STEPS, "swap at step {swap}");
    let first_new = constants.iter().position(|&c| c == 2).unwrap() as u64;
    assert_eq!(
        first_new, swap,
        "first batch of the new build vs logged swap"
    );
    assert!(constants[..swap as usize].iter().all(|&c| c == 1));
    assert!(constants[swap as usize..].iter().all(|&c| c == 2));
    // The marker scalar: generation 0 at the start, 1 from the swap step.
    eprintln!("swap at step {swap}");
    let generations = run.scalars("plugins/a/generation");
    assert_eq!(generations, [(1, 0.0), (swap as i64, 1.0)], "{stderr}");
}

#[test]
fn broken_rebuilds_are_refused_and_the_run_finishes_on_the_old_build() {
    let plugin = TempPlugin::new("versioned_e2e_broken");
    plugin.build();
    let mut run = WatchedRun::start(&plugin.lib_path(), &[]);
    run.wait_for("30 steps", Duration::from_secs(120), |r| {
        r.trace().len() >= 30
    });
    // Wrong dimensions.
    plugin.set("DIM_OFFSET", "1");
    plugin.set("CONSTANT", "3.0");
    plugin.build();
    run.wait_for("the first refusal", Duration::from_secs(60), |r| {
        r.stderr().contains("refused")
    });
    // A build whose `load` panics.
    plugin.set("DIM_OFFSET", "0");
    plugin.set("PANIC_IN_LOAD", "true");
    plugin.build();
    run.wait_for("the second refusal", Duration::from_secs(60), |r| {
        r.stderr().matches("refused").count() >= 2
    });
    run.finish();

    let stderr = run.stderr();
    assert!(!stderr.contains("now loads from"), "{stderr}");
    let refusals: Vec<&str> = stderr.lines().filter(|l| l.contains("refused")).collect();
    assert_eq!(refusals.len(), 2, "{stderr}");
    assert!(
        refusals[0].contains("domain `a` keeps plugin versioned 0.1.0+build1")
            && refusals[0].contains("latent size changed from 4 to 5"),
        "{}",
        refusals[0]
    );
    assert!(
        refusals[1].contains("probe load")
            && refusals[1].contains("panicked")
            && refusals[1].contains("cannot load anything"),
        "{}",
        refusals[1]
    );
    let constants = constants_by_step(&run.trace());
    assert_eq!(constants.len() as u64, STEPS);
    assert!(
        constants.iter().all(|&c| c == 1),
        "only the first build was used"
    );
    let refused = run.scalars("plugins/a/refused_builds");
    assert_eq!(refused.iter().map(|r| r.1).collect::<Vec<_>>(), [1.0, 2.0]);
    assert_eq!(run.scalars("plugins/a/generation"), [(1, 0.0)]);
}
