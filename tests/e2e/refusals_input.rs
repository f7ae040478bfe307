//! End-to-end: hostile configuration input (reference chains, deep dotted
//! keys, `extends` diamonds, non-finite plugin settings, Slurm fields,
//! overflowing numbers) refused at its key, in bounded time and memory.

use crate::refusals::{refused, strs, tutorial, validate_args, write};

#[test]
fn reference_chains_deep_keys_and_extends_graphs_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let mut chain = String::from("name: chain\nvars:\n");
    for i in 0..10_000 {
        chain.push_str(&format!("  k{i}: ${{vars.k{}}}\n", i + 1));
    }
    chain.push_str("  k10000: 1\n");
    let chain = write(tmp.path(), "chain.yaml", &chain);
    let chain = chain.to_str().unwrap();
    refused(
        &["validate", chain],
        &[&format!("{chain}:131:"), "at most 128 long"],
    );
    let key = vec!["a"; 60_000].join(".");
    for o in [format!("vars.{key}=1"), format!("sweep.grid.{key}=[1]")] {
        let args = validate_args(&[&o]);
        refused(
            &strs(&args),
            &["command-line override", "keys nest at most 128"],
        );
    }
    let grid = write(
        tmp.path(),
        "grid.yaml",
        &format!(
            "extends: {}\nsweep: {{ grid: {{ {key}: [1] }} }}\n",
            tutorial()
        ),
    );
    let grid = grid.to_str().unwrap();
    refused(
        &["sweep", grid, "--dry-run"],
        &[grid, "sweep.grid", "keys nest at most 128"],
    );
    // Each level names the next twice (2^40 reads unshared); then a cycle.
    for i in 0..40 {
        write(
            tmp.path(),
            &format!("l{i}.yaml"),
            &format!("extends: [l{0}.yaml, l{0}.yaml]\n", i + 1),
        );
    }
    write(tmp.path(), "l40.yaml", "name: ok\nextends: l0.yaml\n");
    let top = tmp.path().join("l0.yaml");
    refused(
        &["validate", top.to_str().unwrap()],
        &["`extends` cycle", "l40.yaml -> "],
    );
}

#[test]
fn values_a_run_would_choke_on_are_refused_at_validate() {
    for (setting, needles) in [
        (
            "domains.domain1.config.shift=.nan",
            &["domains.domain1.config.shift", "not a finite number"][..],
        ),
        (
            "training.max_epochs=4611686018427387904",
            &["training.max_epochs", "too large"],
        ),
        (
            "workspace.contrastive.logit_scale=100",
            &["workspace.contrastive.logit_scale", "out of range"],
        ),
    ] {
        let args = validate_args(&[setting]);
        refused(&strs(&args), needles);
    }
    let args = validate_args(&[
        "data.groups=[{domains: [domain1, domain2]}]",
        "loss.coefs.translations=0",
        "loss.coefs.contrastives=0",
    ]);
    refused(&strs(&args), &["loss.coefs", "no loss term applies"]);
    // `run` refuses the same before it creates a run folder.
    let tmp = tempfile::tempdir().unwrap();
    let runs = format!("training.runs_dir={}", tmp.path().join("runs").display());
    let mut args = validate_args(&["training.max_epochs=4611686018427387904", &runs]);
    args[0] = "run".to_string();
    refused(&strs(&args), &["training.max_epochs", "too large"]);
    assert!(!tmp.path().join("runs").exists());
}

#[test]
fn slurm_fields_that_would_break_the_job_script_are_refused() {
    let sweep = common_sweep();
    for (o, key) in [
        (
            r#"sweep.launcher.slurm.time="00:10:00\ntouch X""#,
            "sweep.launcher.slurm.time",
        ),
        (
            r#"sweep.launcher.slurm.partition="gpu\ntouch X""#,
            "sweep.launcher.slurm.partition",
        ),
        ("sweep.launcher.slurm.mem=16GB", "sweep.launcher.slurm.mem"),
        (
            r#"sweep.launcher.slurm.extra=["--qos=a\ntouch X"]"#,
            "sweep.launcher.slurm.extra.0",
        ),
    ] {
        refused(&["sweep", &sweep, o, "--dry-run"], &[key, "is not a"]);
        refused(&["validate", &sweep, o], &[key]);
    }
    // The same settings given as flags.
    for (flag, value) in [
        ("--time", "00:10:00\ntouch X"),
        ("--partition", "gpu\ntouch X"),
        ("--mem", "16GB"),
    ] {
        refused(
            &[
                "sweep",
                &sweep,
                "--launcher",
                "slurm",
                "--dry-run",
                flag,
                value,
            ],
            &[flag, "is not a"],
        );
    }
}

fn common_sweep() -> String {
    crate::common::workspace_root()
        .join("experiments/tutorial/sweep.yaml")
        .display()
        .to_string()
}
