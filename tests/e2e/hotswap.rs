//! End-to-end: `shimmer run --watch` swaps a plugin rebuilt mid-run (the
//! batches the trainer saw switch from the old build to the new one at the
//! logged step, no step lost or repeated), refuses broken rebuilds (the run
//! goes on with the old build and says why), and reloading a plugin 100
//! times in one process keeps the thread count flat and memory growth
//! within the library's mapped size per reload. Also: `--resume` with
//! `--set-plugin` records the new plugin in the run's config.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Steps a watched run would take: more than any test waits for. A test
/// stops the run with SIGTERM once it has seen what it checks, so however
/// fast or slow the machine, a rebuild always lands mid-run.
const UNTIL_STOPPED: u64 = 1_000_000_000;

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
    /// `cache`: the run's latent cache (then the watcher re-encodes a new
    /// build's latents before swapping it in); `workers`: loader threads
    /// (which prepare batches ahead of the trainer).
    fn start(plugin: &Path, cache: bool, workers: usize) -> Self {
        Self::start_with_model(plugin, cache, workers, "")
    }

    /// [`WatchedRun::start`] with `model` (YAML, e.g. `, model: {...}`)
    /// appended to domain `a`.
    fn start_with_model(plugin: &Path, cache: bool, workers: usize, model: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let exp = tmp.path().join("exp.yaml");
        std::fs::write(
            &exp,
            format!(
                "name: hotswap\n\
                 domains:\n  \
                   a: {{ plugin: {}, config: {{ dim: 4, items: 64, delay_ms: 2 }}{model} }}\n  \
                   b: {{ plugin: random-vectors, config: {{ dim: 3, train: 64, val: 16, test: 16 }} }}\n\
                 workspace: {{ flavour: two_domains, dim: 4 }}\n\
                 data:\n  batch_size: 8\n  shuffle: false\n  workers: {workers}\n  cache: {{ enabled: {cache} }}\n  \
                   groups: [ {{ domains: [a, b] }}, {{ domains: [a] }}, {{ domains: [b] }} ]\n\
                 training: {{ max_steps: {UNTIL_STOPPED}, val_every_n_epochs: 50, log_every_n_steps: 100 }}\n",
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
            .env(
                shimmer_train::callbacks::TRACE_ENV,
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

    /// Lets the run take `more` steps, then stops it with SIGTERM (as Slurm
    /// would) and checks it ended as interrupted; returns its step count.
    fn stop_after(&mut self, more: usize) -> u64 {
        let seen = self.trace().len();
        self.wait_for("more steps", Duration::from_secs(120), |r| {
            r.trace().len() >= seen + more
        });
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let text = std::fs::read_to_string(self.tmp.path().join("run/summary.json"))
                    .expect("summary.json");
                let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(
                    summary["status"],
                    "interrupted",
                    "the run did not stop cleanly ({status}):\n{}",
                    self.stderr()
                );
                return summary["steps"].as_u64().unwrap();
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
    // With the latent cache on: the swap also replaces the cached latents.
    swap_mid_run("versioned_e2e_swap", true, 0);
}

#[test]
fn a_swap_with_loader_threads_discards_batches_prepared_by_the_old_build() {
    // Two loader threads prefetch batches; after the swap the epoch's
    // remaining batches are loaded again, from the new build.
    swap_mid_run("versioned_e2e_swap_threads", false, 2);
}

/// A watched run (domain `a` with `model` appended, see
/// [`WatchedRun::start_with_model`]) during which the plugin is rebuilt with
/// `CONSTANT = 2` after 30 steps; returns it, stopped 30 steps after the
/// swap, and its step count.
fn rebuilt_mid_run(lib_name: &str, cache: bool, workers: usize, model: &str) -> (WatchedRun, u64) {
    let plugin = TempPlugin::new(lib_name);
    plugin.build();
    let mut run = WatchedRun::start_with_model(&plugin.lib_path(), cache, workers, model);
    run.wait_for("30 steps", Duration::from_secs(120), |r| {
        r.trace().len() >= 30
    });
    plugin.set("CONSTANT", "2.0");
    plugin.set("VERSION", "\"0.1.0+build2\"");
    plugin.build();
    run.wait_for("the swap", Duration::from_secs(60), |r| {
        r.stderr().contains("now loads from")
    });
    let steps = run.stop_after(30);
    (run, steps)
}

fn swap_mid_run(lib_name: &str, cache: bool, workers: usize) {
    let (run, steps) = rebuilt_mid_run(lib_name, cache, workers, "");
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
    assert_eq!(constants.len() as u64, steps, "every step traced once");
    // The step right after the swap is the first new batch.
    assert!((30..steps).contains(&swap), "swap at step {swap}");
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

/// Domain `a`'s first latent per item, in the steps before and from
/// `swap`, checking that an item always had the same value within each.
fn first_latents_around(trace: &[serde_json::Value], swap: u64) -> [Vec<Option<f64>>; 2] {
    let mut phases = [vec![None; 64], vec![None; 64]];
    for line in trace {
        let phase = &mut phases[usize::from(line["step"].as_u64().unwrap() >= swap)];
        for group in ["a,b", "a"] {
            let g = &line["groups"][group];
            let items = g["items"].as_array().unwrap();
            let firsts = g["first"]["a"].as_array().unwrap();
            for (i, v) in items.iter().zip(firsts) {
                let (i, v) = (i.as_u64().unwrap() as usize, v.as_f64().unwrap());
                let seen = phase[i].get_or_insert(v);
                assert_eq!(*seen, v, "item {i} changed without a swap: {line}");
            }
        }
    }
    phases
}

#[test]
fn a_frozen_domain_model_keeps_its_outputs_and_follows_a_swap() {
    // The latent cache is on, so the watched domain's frozen model keeps
    // its outputs in memory; the swap must drop them.
    let model = ", model: { type: linear, latent_dim: 3, frozen: true }";
    let (run, _) = rebuilt_mid_run("versioned_e2e_frozen", true, 0, model);
    let stderr = run.stderr();
    let swaps = logged_steps(&stderr, "domain `a` now loads from plugin versioned");
    assert_eq!(swaps.len(), 1, "{stderr}");
    let [before, after] = first_latents_around(&run.trace(), swaps[0]);
    // A linear model of items whose values all moved by +1: every item's
    // output moved by the same amount.
    let shifts: Vec<f64> = before
        .iter()
        .zip(&after)
        .filter_map(|(b, a)| Some(a.as_ref()? - b.as_ref()?))
        .collect();
    assert!(
        shifts.len() > 10,
        "items seen on both sides: {}",
        shifts.len()
    );
    assert!(
        shifts[0].abs() > 1e-3,
        "the new build's outputs: {shifts:?}"
    );
    assert!(
        shifts.iter().all(|s| (s - shifts[0]).abs() < 1e-4),
        "stale outputs after the swap: {shifts:?}"
    );
}

#[test]
fn broken_rebuilds_are_refused_and_the_run_goes_on_with_the_old_build() {
    let plugin = TempPlugin::new("versioned_e2e_broken");
    plugin.build();
    let mut run = WatchedRun::start(&plugin.lib_path(), false, 0);
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
    let steps = run.stop_after(10);

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
    assert_eq!(constants.len() as u64, steps);
    assert!(
        constants.iter().all(|&c| c == 1),
        "only the first build was used"
    );
    let refused = run.scalars("plugins/a/refused_builds");
    assert_eq!(refused.iter().map(|r| r.1).collect::<Vec<_>>(), [1.0, 2.0]);
    assert_eq!(run.scalars("plugins/a/generation"), [(1, 0.0)]);
}

/// Environment variable that makes [`reload_cycles_child`] measure.
const RELOAD_CHILD_ENV: &str = "SHIMMER_HOTSWAP_RELOAD_CHILD";
/// Reload cycles measured.
const RELOADS: u64 = 100;

/// One reload cycle: a forced reload of the plugin file through the
/// watcher (new private copy, new domain, compatibility check and probe,
/// swap), then two short-lived threads load through the new build, one of
/// them hitting a panicking item (a plugin's std registers thread-exit
/// destructors on that path), and the old build must be released.
fn reload_cycle(
    watcher: &mut shimmer_data::swap::PluginWatcher,
    src: &std::sync::Arc<shimmer_data::swap::SwappableSource>,
) {
    use shimmer_data::ItemSource;
    use shimmer_data::swap::WatchEvent;
    use shimmer_plugin_api::Split;
    let events = watcher.reload_now(0, true);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, WatchEvent::Swapped { .. })),
        "{events:?}"
    );
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let src = src.clone();
            std::thread::spawn(move || {
                let mut out = vec![0.0f32; 4 * 16];
                src.load_latents(Split::Train, &[0, 1, 2, 3], &mut out)
                    .unwrap();
                if t == 1 {
                    let mut one = vec![0.0f32; 16];
                    let err = src.load_latents(Split::Train, &[63], &mut one).unwrap_err();
                    assert!(format!("{err:#}").contains("panicked"), "{err:#}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(watcher.all_released(), "the old build is still in use");
}

/// The measurement itself; runs only in the process that
/// [`reloading_100_times_keeps_threads_flat_and_memory_bounded`] starts
/// (a test process of its own, so no other test's threads are counted).
#[test]
#[ignore = "started by reloading_100_times_keeps_threads_flat_and_memory_bounded"]
fn reload_cycles_child() {
    use shimmer_data::PluginSource;
    use shimmer_data::swap::{PluginWatcher, ProcessStats, SwappableSource};
    use shimmer_plugin_api::Split;
    use shimmer_plugin_host::PluginLibrary;
    use std::sync::Arc;
    if std::env::var_os(RELOAD_CHILD_ENV).is_none() {
        return;
    }
    let path = common::plugin_path("faulty_plugin");
    let config = r#"{"dim": 16, "items": 64, "panic_on": 63}"#;
    let handle = PluginLibrary::open(&path)
        .unwrap()
        .create_domain("faulty", config)
        .unwrap();
    let src = Arc::new(SwappableSource::new(PluginSource::new(handle, config)));
    let mut watcher = PluginWatcher::new();
    watcher.watch("a", config, src.clone());
    watcher.require("a", Split::Train, 32);
    // Warm up: first-use allocations (allocator arenas, lazy statics).
    for _ in 0..5 {
        reload_cycle(&mut watcher, &src);
    }
    let before = ProcessStats::read().unwrap();
    let start = Instant::now();
    for _ in 0..RELOADS {
        reload_cycle(&mut watcher, &src);
    }
    let secs = start.elapsed().as_secs_f64();
    let after = ProcessStats::read().unwrap();
    let file_kib = std::fs::metadata(&path).unwrap().len() / 1024;
    println!(
        "RELOAD-REPORT {}",
        serde_json::json!({
            "reloads": RELOADS,
            "seconds": secs,
            "threads_before": before.threads,
            "threads_after": after.threads,
            "rss_kib_before": before.rss_kib,
            "rss_kib_after": after.rss_kib,
            "copies_before": before.plugin_copies,
            "copies_after": after.plugin_copies,
            "mapped_kib_before": before.plugin_mapped_kib,
            "mapped_kib_after": after.plugin_mapped_kib,
            "library_file_kib": file_kib,
        })
    );
}

#[test]
fn reloading_100_times_keeps_threads_flat_and_memory_bounded() {
    common::build_all();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hotswap::reload_cycles_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(RELOAD_CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the measuring process failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = stdout
        .lines()
        .find_map(|l| Some(&l[l.find("RELOAD-REPORT ")? + 14..]))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no report in:\n{stdout}"));
    eprintln!("{report}");
    let n = |k: &str| report[k].as_u64().unwrap();
    // No thread left behind.
    assert_eq!(n("threads_after"), n("threads_before"), "{report}");
    // Every reload leaves exactly one mapped copy (never unmapped, by design)...
    let copies = n("copies_after") - n("copies_before");
    assert_eq!(copies, RELOADS, "{report}");
    let mapped_per_copy = (n("mapped_kib_after") - n("mapped_kib_before")) / copies;
    assert!(mapped_per_copy > 0, "{report}");
    // ...and resident memory grows by at most one library's mapped size per reload.
    let rss_growth = n("rss_kib_after").saturating_sub(n("rss_kib_before"));
    assert!(
        rss_growth <= RELOADS * mapped_per_copy,
        "RSS grew {rss_growth} KiB over {RELOADS} reloads, more than {mapped_per_copy} KiB each: {report}"
    );
}

#[test]
fn resume_with_another_plugin_checks_dims_and_records_the_change() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("exp.yaml");
    let first = common::plugin_path("versioned_plugin");
    std::fs::write(
        &exp,
        format!(
            "name: resume-swap\n\
             domains:\n  \
               a: {{ plugin: {}, config: {{ dim: 4, items: 64 }} }}\n  \
               b: {{ plugin: random-vectors, config: {{ dim: 3, train: 64, val: 16, test: 16 }} }}\n\
             workspace: {{ flavour: two_domains, dim: 4 }}\n\
             data:\n  batch_size: 8\n  workers: 0\n  \
               groups: [ {{ domains: [a, b] }}, {{ domains: [a] }}, {{ domains: [b] }} ]\n  \
               val: [ {{ items: {{ count: 16 }} }} ]\n  test: [ {{ items: {{ count: 16 }} }} ]\n\
             training: {{ max_steps: 16 }}\n",
            first.display()
        ),
    )
    .unwrap();
    let dir = tmp.path().join("run");
    let run = |args: &[&str], trace: &Path| {
        common::shimmer()
            .arg("run")
            .args(args)
            .env(shimmer_train::callbacks::TRACE_ENV, trace)
            .output()
            .unwrap()
    };
    let out = run(
        &[exp.to_str().unwrap(), "--run-dir", dir.to_str().unwrap()],
        &tmp.path().join("trace1.jsonl"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Continue the finished run for more steps: raise max_steps in its config.
    let config = dir.join("config.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("max_steps: 16"), "{text}");
    std::fs::write(&config, text.replace("max_steps: 16", "max_steps: 32")).unwrap();

    // A plugin with other latent dims is refused; the config is untouched.
    let wrong = TempPlugin::new("versioned_e2e_resume");
    wrong.set("DIM_OFFSET", "1");
    wrong.build();
    let set = format!("a={}", wrong.lib_path().display());
    let trace2 = tmp.path().join("trace2.jsonl");
    let out = run(
        &["--resume", dir.to_str().unwrap(), "--set-plugin", &set],
        &trace2,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("latents have 5 values, the run was trained with 4"),
        "{stderr}"
    );
    let before = std::fs::read_to_string(&config).unwrap();
    assert!(!before.contains("--set-plugin"), "{before}");

    // Another plugin with the same dims (the faulty fixture): allowed, used
    // for the rest of the run, and recorded in config.yaml.
    let faulty = common::plugin_path("faulty_plugin");
    let set = format!("a={}", faulty.display());
    let out = run(
        &["--resume", dir.to_str().unwrap(), "--set-plugin", &set],
        &trace2,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming at step 16"), "{stderr}");
    let after = std::fs::read_to_string(&config).unwrap();
    let record = format!(
        "domains.a.plugin: {} -> {}",
        first.display(),
        faulty.canonicalize().unwrap().display()
    );
    assert!(after.starts_with("# --set-plugin on resume"), "{after}");
    assert!(after.contains(&record), "{after}");
    assert!(
        after.contains(&format!(
            "plugin: {}",
            faulty.canonicalize().unwrap().display()
        )),
        "{after}"
    );
    // Steps 16.. came from the faulty plugin: `sin(0.37 i + j)`, not
    // `1 + i / 1000`.
    let steps: Vec<serde_json::Value> = std::fs::read_to_string(&trace2)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(steps.len(), 16);
    assert_eq!(steps[0]["step"], 16);
    for s in &steps {
        let g = &s["groups"]["a"];
        for (i, v) in g["items"]
            .as_array()
            .unwrap()
            .iter()
            .zip(g["first"]["a"].as_array().unwrap())
        {
            let expected = (i.as_f64().unwrap() * 0.37).sin();
            assert!((v.as_f64().unwrap() - expected).abs() < 1e-5, "{s}");
        }
    }
}
