//! Hostile configuration input, through the public API: reference chains,
//! deep dotted keys, `extends` diamonds, non-finite plugin settings, loss
//! coefficients no batch can use and Slurm fields that would break the job
//! script, each refused at its key in bounded time (kept out of `src/` so
//! the crate stays within its size budget).

use serde::de::DeserializeOwned;
use shimmer_config::SweepConfig;
use shimmer_config::yaml::{ConfigError, Loaded, load};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// The smallest GW experiment (the `a` domain on line 4, the coefficients
/// on line 10).
const P1: &str = r#"
name: p1
domains:
  a: { latent_dim: 8 }
  b: { latent_dim: 16 }
workspace:
  flavour: two_domains
  dim: 16
loss:
  coefs: { demi_cycles: 1, cycles: 1.0, translations: 1.0, contrastives: 0.05 }
optim:
  scheduler: { type: one_cycle, total_steps: 20 }
"#;

#[derive(Debug, serde::Deserialize)]
struct Small {
    #[serde(default)]
    seed: u64,
}

/// A folder of YAML files for one test.
struct Files(TempDir);

impl Files {
    fn new(files: &[(&str, &str)]) -> Self {
        let dir = TempDir::new().expect("temp dir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        Files(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn load<T: DeserializeOwned>(&self, name: &str, o: &[&str]) -> Result<Loaded<T>, ConfigError> {
        let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
        load(&self.path(name), &o)
    }

    /// The error, with the temp folder shown as `<dir>`.
    fn error<T: DeserializeOwned + std::fmt::Debug>(&self, name: &str, o: &[&str]) -> String {
        let err = self.load::<T>(name, o).expect_err("should fail");
        let dir = format!("{}/", self.0.path().display());
        err.to_string().replace(&dir, "<dir>/")
    }
}

fn sweep(yaml: &str) -> SweepConfig {
    serde_norway::from_str(yaml).unwrap()
}

fn parse(text: &str) -> Result<shimmer_config::Experiment, String> {
    shimmer_config::parse(text, Path::new("p1.yaml")).map_err(|e| e.to_string())
}

#[test]
fn long_reference_chains_and_deep_results_are_refused_at_once() {
    let mut chain = String::from("name: c\nvars:\n");
    for i in 0..10_000 {
        chain.push_str(&format!("  k{i}: ${{vars.k{}}}\n", i + 1));
    }
    chain.push_str("  k10000: 1\n");
    // Each value nests the next one level deeper, the last resolved first.
    let mut nest = String::from("name: n\n");
    for i in (0..300).rev() {
        nest.push_str(&format!("k{i}: {{k: \"${{k{}}}\"}}\n", i + 1));
    }
    nest.push_str("k300: 1\n");
    let files = Files::new(&[("chain.yaml", &chain), ("nest.yaml", &nest)]);
    let err = files.error::<serde_json::Value>("chain.yaml", &[]);
    assert!(err.starts_with("<dir>/chain.yaml:131:"), "{err}");
    assert!(
        err.contains("vars.k128: ") && err.contains("at most 128 long"),
        "{err}"
    );
    let err = files.error::<serde_json::Value>("nest.yaml", &[]);
    assert!(err.contains("nests at most 128 deep"), "{err}");
    let short = Files::new(&[("s.yaml", "name: s\na: ${b}\nb: ${c}\nc: 1\n")]);
    assert!(short.load::<serde_json::Value>("s.yaml", &[]).is_ok());
}

#[test]
fn deep_dotted_keys_are_refused_before_anything_is_built() {
    let files = Files::new(&[("e.yaml", "name: e\n")]);
    let key = vec!["a"; 60_000].join(".");
    for o in [
        format!("vars.{key}=1"),
        format!("+{key}=1"),
        format!("~{key}"),
    ] {
        let err = files.error::<serde_json::Value>("e.yaml", &[&o]);
        assert!(err.contains("dotted parts: keys nest at most 128") && err.len() < 800);
    }
    let ok = format!("{}=1", vec!["a"; 128].join("."));
    assert!(files.load::<serde_json::Value>("e.yaml", &[&ok]).is_ok());
}

#[test]
fn extends_diamonds_read_each_file_once_and_are_bounded() {
    // Each level names the next twice: 2^40 reads without sharing.
    let mut files: Vec<(String, String)> = (0..40)
        .map(|i| {
            (
                format!("l{i}.yaml"),
                format!("extends: [l{0}.yaml, l{0}.yaml]\n", i + 1),
            )
        })
        .collect();
    files.push(("l40.yaml".into(), "name: deep\nseed: 40\n".into()));
    let named: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = Files::new(&named);
    let loaded = dir.load::<Small>("l0.yaml", &[]).unwrap();
    assert_eq!((loaded.config.seed, loaded.files().len()), (40, 41));
    let many: Vec<(String, String)> = (0..70)
        .map(|i| (format!("m{i}.yaml"), format!("extends: m{}.yaml\n", i + 1)))
        .chain([("m70.yaml".to_string(), "name: m\n".to_string())])
        .collect();
    let named: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let err = Files::new(&named).error::<Small>("m0.yaml", &[]);
    assert!(err.contains("at most 64 files"), "{err}");
}

#[test]
fn non_finite_plugin_settings_are_refused_at_their_key() {
    for (config, key) in [
        ("{ shift: .nan }", "domains.a.config.shift"),
        (
            "{ parts: [{ mean: -.inf }] }",
            "domains.a.config.parts[0].mean",
        ),
    ] {
        let bad = P1.replace(
            "a: { latent_dim: 8 }",
            &format!("a: {{ config: {config} }}"),
        );
        let err = parse(&bad).unwrap_err();
        assert!(err.starts_with("p1.yaml:4:") && err.contains(key), "{err}");
        assert!(err.contains("not a finite number"), "{err}");
    }
    let err = parse(&format!("{P1}vars: {{ x: .inf }}\n")).unwrap_err();
    assert!(err.contains("vars.x: inf is not a finite"), "{err}");
}

#[test]
fn loss_coefficients_keep_defaults_and_a_batch_needs_a_term() {
    let one = P1.replace("demi_cycles: 1, cycles: 1.0, translations: 1.0, ", "");
    let exp = parse(&one).unwrap();
    let coefs: Vec<_> = exp.loss.coefs.iter().map(|(f, c)| (f.name(), *c)).collect();
    let want = [
        ("contrastives", 0.05),
        ("demi_cycles", 1.0),
        ("cycles", 1.0),
    ];
    assert_eq!(coefs, [&want[..], &[("translations", 1.0)]].concat());
    let paired = format!("{P1}data: {{ groups: [{{ domains: [a, b] }}] }}\n").replace(
        "translations: 1.0, contrastives: 0.05",
        "translations: 0, contrastives: 0",
    );
    let err = parse(&paired).unwrap_err();
    assert!(err.starts_with("p1.yaml:10:") && err.contains("loss.coefs: no loss term applies"));
    assert!(
        err.contains("translations, contrastives and their"),
        "{err}"
    );
    let seq = paired.replace("groups: [", "mode: sequential, groups: [{ domains: [a] }, ");
    let err = parse(&seq).unwrap_err();
    assert!(err.contains("applies to training group 1"), "{err}");
}

#[test]
fn slurm_fields_and_deep_keys_are_refused_at_their_key() {
    let deep = vec!["a"; 200].join(".");
    let err = sweep(&format!("grid: {{ {deep}: [1] }}"))
        .check()
        .unwrap_err();
    assert_eq!(err.key, "sweep.grid");
    for (slurm, key) in [
        ("time: \"00:10:00\\ntouch X\"", "time"),
        ("time: 1.5", "time"),
        ("time: 1-2:3:4:5", "time"),
        ("partition: \"gpu\\ntouch X\"", "partition"),
        ("mem: 16GB", "mem"),
        ("job_name: \"a b\"", "job_name"),
        ("cpus: 0", "cpus"),
        ("extra: [\"--account=lab\\ntouch X\"]", "extra.0"),
        ("extra: [\"--qos=a;b\"]", "extra.0"),
        ("extra: [\"touch X\"]", "extra.0"),
    ] {
        let s = sweep(&format!("launcher: {{ slurm: {{ {slurm} }} }}"));
        let err = s.check().unwrap_err();
        assert_eq!(err.key, format!("sweep.launcher.slurm.{key}"), "{slurm}");
        assert!(!err.message.contains('\n'), "{}", err.message);
    }
    for time in [
        "60",
        "10:00",
        "02:00:00",
        "1-0",
        "1-2:30",
        "1-00:00:00",
        "UNLIMITED",
    ] {
        let s = sweep(&format!(
            "launcher: {{ slurm: {{ time: \"{time}\", mem: 16G, \
             partition: \"gpu,cpu\", extra: [\"#SBATCH --account=lab\", \"-q short\"] }} }}"
        ));
        assert_eq!(s.check(), Ok(()), "{time}");
    }
}
