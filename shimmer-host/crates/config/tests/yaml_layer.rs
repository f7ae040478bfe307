//! The YAML layer, from outside: loading from files: layers, overrides, interpolation and positioned
//! errors, with a small local type and with the real `Experiment`.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use shimmer_config::Experiment;
use shimmer_config::yaml::*;
use std::fs;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Small {
    name: String,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    lr: f64,
    #[serde(default)]
    flag: bool,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    model: Option<Model>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Model {
    dim: usize,
    #[serde(default)]
    hidden: usize,
}

/// A folder of YAML files for one test.
struct Files(TempDir);

impl Files {
    fn new(files: &[(&str, &str)]) -> Self {
        let dir = TempDir::new().expect("temp dir");
        for (name, text) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).expect("mkdir");
            }
            fs::write(path, text).expect("write");
        }
        Files(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn load<T: DeserializeOwned>(
        &self,
        name: &str,
        overrides: &[&str],
    ) -> Result<Loaded<T>, ConfigError> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        load(&self.path(name), &overrides)
    }

    /// The error, with the temp folder shown as `<dir>`.
    fn error<T: DeserializeOwned + std::fmt::Debug>(
        &self,
        name: &str,
        overrides: &[&str],
    ) -> String {
        let err = self.load::<T>(name, overrides).expect_err("should fail");
        let dir = format!("{}/", self.0.path().display());
        err.to_string().replace(&dir, "<dir>/")
    }
}

#[test]
fn merge_order_is_bases_experiment_local_then_overrides() {
    let files = Files::new(&[
        (
            "base.yaml",
            "name: base\nseed: 1\nlr: 0.1\nmodel: {dim: 4, hidden: 8}\n",
        ),
        (
            "exp.yaml",
            "extends: base.yaml\nname: exp\nseed: 2\nmodel: {dim: 5}\n",
        ),
        ("local.yaml", "seed: 3\n"),
    ]);
    let loaded = files.load::<Small>("exp.yaml", &["lr=0.5"]).unwrap();
    let expected = Small {
        name: "exp".into(),
        seed: 3,
        lr: 0.5,
        flag: false,
        groups: vec![],
        model: Some(Model { dim: 5, hidden: 8 }),
    };
    assert_eq!(loaded.config, expected);
    let names: Vec<_> = loaded
        .files()
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["base.yaml", "exp.yaml", "local.yaml"]);
    assert!(
        !loaded.resolved_yaml.contains("extends"),
        "{}",
        loaded.resolved_yaml
    );
    assert!(
        loaded.resolved_yaml.contains("seed: 3"),
        "{}",
        loaded.resolved_yaml
    );
}

#[test]
fn extends_chains_and_lists_apply_in_order() {
    let files = Files::new(&[
        ("common/root.yaml", "name: root\nseed: 1\ngroups: [r]\n"),
        ("common/a.yaml", "extends: root.yaml\nseed: 2\nlr: 0.2\n"),
        ("b.yaml", "lr: 0.3\nflag: true\n"),
        (
            "exps/exp.yaml",
            "extends: [../common/a.yaml, ../b.yaml]\nname: exp\n",
        ),
    ]);
    let loaded = files.load::<Small>("exps/exp.yaml", &[]).unwrap();
    assert_eq!(loaded.config.seed, 2);
    assert_eq!(loaded.config.lr, 0.3);
    assert!(loaded.config.flag);
    assert_eq!(loaded.config.groups, ["r"]);
    assert_eq!(loaded.config.name, "exp");
    assert_eq!(loaded.files().len(), 4);
}

#[test]
fn extends_cycle_names_the_chain() {
    let files = Files::new(&[
        ("a.yaml", "extends: b.yaml\nname: a\n"),
        ("b.yaml", "extends: [a.yaml]\n"),
    ]);
    let err = files.error::<Small>("a.yaml", &[]);
    assert_eq!(
        err,
        "<dir>/b.yaml:1:11: `extends` cycle: <dir>/a.yaml -> <dir>/b.yaml -> <dir>/a.yaml"
    );
}

#[test]
fn missing_base_names_the_extends_entry() {
    let files = Files::new(&[("a.yaml", "name: a\nextends: nope.yaml\n")]);
    let err = files.error::<Small>("a.yaml", &[]);
    assert!(
        err.starts_with("<dir>/a.yaml:2:10: cannot read `<dir>/nope.yaml`"),
        "{err}"
    );
}

#[test]
fn overrides_are_typed_yaml() {
    let files = Files::new(&[("exp.yaml", "name: exp\nmodel: {dim: 1, hidden: 2}\n")]);
    let loaded = files
        .load::<Small>(
            "exp.yaml",
            &[
                "seed=7",
                "lr=3e-4",
                "flag=true",
                "name=2024",
                "groups=[a, b]",
                "model={dim: 8}",
            ],
        )
        .unwrap();
    assert_eq!(
        loaded.config,
        Small {
            name: "2024".into(),
            seed: 7,
            lr: 3e-4,
            flag: true,
            groups: vec!["a".into(), "b".into()],
            model: Some(Model { dim: 8, hidden: 2 }),
        }
    );
}

#[test]
fn overrides_create_keys_and_index_lists() {
    let files = Files::new(&[("exp.yaml", "name: exp\ngroups: [a, b]\n")]);
    let loaded = files
        .load::<Small>("exp.yaml", &["model.dim=3", "groups.1=c"])
        .unwrap();
    assert_eq!(loaded.config.model, Some(Model { dim: 3, hidden: 0 }));
    assert_eq!(loaded.config.groups, ["a", "c"]);
    let err = files.error::<Small>("exp.yaml", &["groups.5=c"]);
    assert_eq!(
        err,
        "command-line override `groups.5=c`: groups: `groups` is a list of 2 items: `5` is not an index in it"
    );
    let err = files.error::<Small>("exp.yaml", &["name.x=1"]);
    assert!(err.contains("cannot set a key inside `name`"), "{err}");
    let err = files.error::<Small>("exp.yaml", &["seed"]);
    assert!(err.contains("expected `key.path=value`"), "{err}");
}

#[test]
fn hydra_overrides_delete_add_and_force_keys() {
    let files = Files::new(&[
        (
            "base.yaml",
            "name: base\nmodel: { dim: 4, hidden: 8 }\ngroups: [a, b]\n",
        ),
        ("exp.yaml", "extends: base.yaml\nname: exp\n"),
    ]);
    // `~` deletes an inherited key.
    let loaded = files.load::<Small>("exp.yaml", &["~model"]).unwrap();
    assert_eq!(loaded.config.model, None);
    let loaded = files.load::<Small>("exp.yaml", &["~groups.0"]).unwrap();
    assert_eq!(loaded.config.groups, ["b"]);
    let err = files.error::<Small>("exp.yaml", &["~model.width"]);
    assert!(err.contains("there is no `model.width` to delete"), "{err}");
    let err = files.error::<Small>("exp.yaml", &["~model=1"]);
    assert!(err.contains("without a value"), "{err}");
    // `+` adds a key that is not set, and only such a key.
    let loaded = files
        .load::<Small>("exp.yaml", &["~model", "+model.dim=2"])
        .unwrap();
    assert_eq!(loaded.config.model, Some(Model { dim: 2, hidden: 0 }));
    let err = files.error::<Small>("exp.yaml", &["+model.dim=2"]);
    assert!(
        err.contains("already set (at") && err.contains("base.yaml"),
        "{err}"
    );
    // `++` replaces a mapping instead of merging into it.
    let merged = files
        .load::<Small>("exp.yaml", &["model={dim: 1}"])
        .unwrap();
    assert_eq!(merged.config.model, Some(Model { dim: 1, hidden: 8 }));
    let replaced = files
        .load::<Small>("exp.yaml", &["++model={dim: 1}"])
        .unwrap();
    assert_eq!(replaced.config.model, Some(Model { dim: 1, hidden: 0 }));
}

#[test]
fn interpolation_keeps_types_and_embeds_text() {
    let files = Files::new(&[(
        "exp.yaml",
        "name: run-${model.dim}-${env:SHIMMER_YAML_TEST_UNSET,x}\nseed: ${model.dim}\n\
         groups: ${list}\nlist: ['${name}', '\\${lit}']\nmodel: {dim: 4}\n",
    )]);
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct WithList {
        name: String,
        seed: u64,
        groups: Vec<String>,
        list: Vec<String>,
        model: Model,
    }
    let loaded = files.load::<WithList>("exp.yaml", &[]).unwrap();
    assert_eq!(loaded.config.name, "run-4-x");
    assert_eq!(loaded.config.seed, 4);
    assert_eq!(loaded.config.groups, ["run-4-x", "${lit}"]);
    assert_eq!(loaded.config.list, loaded.config.groups);
    assert_eq!(loaded.config.model.dim, 4);
    assert!(
        loaded.resolved_yaml.contains("seed: 4\n"),
        "{}",
        loaded.resolved_yaml
    );
}

#[test]
fn env_interpolation_is_typed_with_default() {
    // Both variables are unset in tests; the defaults are typed.
    let files = Files::new(&[(
        "exp.yaml",
        "name: ${env:SHIMMER_YAML_TEST_UNSET_NAME,abc}\nseed: ${env:SHIMMER_YAML_TEST_UNSET_SEED, 12}\n",
    )]);
    let loaded = files.load::<Small>("exp.yaml", &[]).unwrap();
    assert_eq!(loaded.config.name, "abc");
    assert_eq!(loaded.config.seed, 12);
    let files = Files::new(&[("exp.yaml", "name: ${env:SHIMMER_YAML_TEST_UNSET_NAME}\n")]);
    let err = files.error::<Small>("exp.yaml", &[]);
    assert!(
        err.starts_with("<dir>/exp.yaml:1:7: name: environment variable `SHIMMER_YAML_TEST_UNSET_NAME` is not set"),
        "{err}"
    );
}

#[test]
fn path_interpolation_is_relative_to_the_file_that_says_it() {
    let files = Files::new(&[
        (
            "base/base.yaml",
            "groups: ['${path:data/x.npy}', '${path:../up}']\n",
        ),
        ("exp.yaml", "extends: base/base.yaml\nname: ${path:.}\n"),
    ]);
    let loaded = files
        .load::<Small>("exp.yaml", &["model={dim: 1}"])
        .unwrap();
    let dir = files.0.path();
    assert_eq!(Path::new(&loaded.config.name), dir);
    assert_eq!(
        loaded.config.groups,
        [
            dir.join("base/data/x.npy").display().to_string(),
            dir.join("up").display().to_string()
        ]
    );
    let over = files
        .load::<Small>("exp.yaml", &["name=${path:rel}"])
        .unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(Path::new(&over.config.name), cwd.join("rel"));
    // A typo in the resolver's name is a key path the document lacks.
    let files = Files::new(&[("exp.yaml", "name: ${pth:x}\n")]);
    let err = files.error::<Small>("exp.yaml", &[]);
    assert!(err.contains("`${pth:x}`: no such key"), "{err}");
}

#[test]
fn env_interpolation_reads_the_environment() {
    // PATH is set wherever tests run.
    let files = Files::new(&[("exp.yaml", "name: ${env:PATH}\n")]);
    let loaded = files.load::<Small>("exp.yaml", &[]).unwrap();
    assert_eq!(Some(loaded.config.name), std::env::var("PATH").ok());
}

#[test]
fn missing_interpolation_key_names_key_and_use() {
    let files = Files::new(&[("exp.yaml", "name: x\nmodel:\n  dim: ${model.size}\n")]);
    let err = files.error::<Small>("exp.yaml", &[]);
    assert_eq!(
        err,
        "<dir>/exp.yaml:3:8: model.dim: `${model.size}`: no such key in the configuration (`model` has `dim`)"
    );
}

#[test]
fn interpolation_cycles_are_errors() {
    let files = Files::new(&[("exp.yaml", "name: ${a}\na: ${b.c}\nb: {c: '${name}'}\n")]);
    let err = files.error::<Small>("exp.yaml", &[]);
    assert_eq!(
        err,
        "<dir>/exp.yaml:1:7: name: interpolation cycle: `name` -> `a` -> `b.c` -> `name`"
    );
}

#[test]
fn unknown_key_in_a_base_points_into_the_base() {
    let files = Files::new(&[
        ("base.yaml", "name: b\nmodel:\n  dim: 3\n  hiden: 4\n"),
        ("exp.yaml", "extends: base.yaml\nname: e\n"),
    ]);
    let err = files.error::<Small>("exp.yaml", &[]);
    assert_eq!(
        err,
        "<dir>/base.yaml:4:3: model.hiden: unknown field `hiden`, expected `dim` or `hidden`"
    );
}

#[test]
fn wrong_type_from_an_override_names_the_override() {
    let files = Files::new(&[("exp.yaml", "name: e\nlr: 0.1\n")]);
    let err = files.error::<Small>("exp.yaml", &["lr=fast"]);
    assert_eq!(
        err,
        "command-line override `lr=fast`: lr: invalid type: string \"fast\", expected f64"
    );
    let err = files.error::<Small>("exp.yaml", &["groups.x=1"]);
    assert!(
        err.starts_with("command-line override `groups.x=1`: groups: invalid type: map"),
        "{err}"
    );
}

#[test]
fn unknown_key_in_local_yaml_points_into_local_yaml() {
    let files = Files::new(&[
        ("exp.yaml", "name: e\nmodel: {dim: 1}\n"),
        ("local.yaml", "# this machine\nmodel:\n  dimm: 2\n"),
    ]);
    let err = files.error::<Small>("exp.yaml", &[]);
    assert_eq!(
        err,
        "<dir>/local.yaml:3:3: model.dimm: unknown field `dimm`, expected `dim` or `hidden`"
    );
}

#[test]
fn syntax_error_has_file_line_and_column() {
    let files = Files::new(&[("exp.yaml", "name: e\nmodel: {dim: 1\nseed: 2\n")]);
    let err = files
        .load::<Small>("exp.yaml", &[])
        .expect_err("should fail");
    assert_eq!(err.kind(), ErrorKind::Syntax);
    match err.origin() {
        Some(Origin::File { path, line, .. }) => {
            assert_eq!(path, &files.path("exp.yaml"));
            assert!(*line >= 2, "{err}");
        }
        other => panic!("{other:?}: {err}"),
    }
    let err = files.error::<Small>("exp.yaml", &[]);
    assert!(err.starts_with("<dir>/exp.yaml:"), "{err}");
    let files = Files::new(&[("exp.yaml", "name: e\n")]);
    let err = files.error::<Small>("exp.yaml", &["groups=[a"]);
    assert!(
        err.starts_with("command-line override `groups=[a`: "),
        "{err}"
    );
}

/// A minimal valid experiment (the parity case P1's shape).
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

#[test]
fn loads_a_real_experiment_with_overrides() {
    let files = Files::new(&[("p1.yaml", P1)]);
    let loaded = files
        .load::<Experiment>(
            "p1.yaml",
            &["optim.lr=3e-4", "workspace.dim=32", "seed=${workspace.dim}"],
        )
        .unwrap();
    let exp = loaded.config;
    exp.check().unwrap();
    assert_eq!(exp.optim.lr, 3e-4);
    assert_eq!(exp.workspace().unwrap().dim, 32);
    assert_eq!(exp.seed, 32);
    assert_eq!(exp.domains.keys().collect::<Vec<_>>(), ["a", "b"]);
    // The resolved YAML reads back as the same experiment.
    let again: Experiment = serde_norway::from_str(&loaded.resolved_yaml).unwrap();
    assert_eq!(again.workspace().unwrap().dim, 32);
}

#[test]
fn real_experiment_errors_name_position_and_allowed_keys() {
    let files = Files::new(&[("p1.yaml", &P1.replace("  dim: 16", "  dims: 16"))]);
    let err = files.error::<Experiment>("p1.yaml", &[]);
    assert!(
        err.starts_with("<dir>/p1.yaml:8:3: workspace.dims: unknown field `dims`, expected one of `flavour`, `dim`"),
        "{err}"
    );
    let files = Files::new(&[("p1.yaml", P1)]);
    let err = files.error::<Experiment>("p1.yaml", &["optim.scheduler.type=cosin"]);
    assert!(
        err.starts_with(
            "command-line override `optim.scheduler.type=cosin`: optim.scheduler.type: unknown variant `cosin`"
        ),
        "{err}"
    );
    let err = files.error::<Experiment>("p1.yaml", &["optim.scheduler.warmup=3"]);
    assert!(
        err.starts_with("command-line override `optim.scheduler.warmup=3`: optim.scheduler.warmup: unknown field `warmup`"),
        "{err}"
    );
    let err = files.error::<Experiment>("p1.yaml", &["optim.scheduler.max_lr=abc"]);
    assert_eq!(
        err,
        "command-line override `optim.scheduler.max_lr=abc`: optim.scheduler.max_lr: \
         invalid type: string \"abc\", expected f64"
    );
    let err = files.error::<Experiment>("p1.yaml", &["workspace.flavour=fusoin"]);
    assert!(err.contains("expected `two_domains` or `fusion`"), "{err}");
}

#[test]
fn alias_bombs_are_refused_before_they_expand() {
    // Each level lists the previous one ten times: 10^9 values unfolded.
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    text.push_str("name: x\n");
    let files = Files::new(&[("exp.yaml", &text)]);
    let err = files.error::<Small>("exp.yaml", &[]);
    assert!(err.contains("expands to more than 200000 values"), "{err}");
    assert!(err.starts_with("<dir>/exp.yaml:"), "{err}");
    // A few aliases are fine.
    let files = Files::new(&[("exp.yaml", "groups: &g [a, b]\nname: x\nlist: *g\n")]);
    assert!(files.load::<serde_json::Value>("exp.yaml", &[]).is_ok());
}

#[test]
fn doubling_interpolations_are_refused() {
    let mut text = String::from("k0: abcdefgh\n");
    for i in 1..31 {
        text.push_str(&format!("k{i}: \"${{k{p}}}${{k{p}}}\"\n", p = i - 1));
    }
    text.push_str("name: ${k30}\n");
    let files = Files::new(&[("exp.yaml", &text)]);
    let err = files.error::<serde_json::Value>("exp.yaml", &[]);
    assert!(
        err.contains("characters: refused") || err.contains("values: refused"),
        "{err}"
    );
    // The same with whole values: lists of lists.
    let mut text = String::from("k0: [a, b]\n");
    for i in 1..40 {
        text.push_str(&format!(
            "k{i}: [\"${{k{p}}}\", \"${{k{p}}}\"]\n",
            p = i - 1
        ));
    }
    let files = Files::new(&[("exp.yaml", &text)]);
    let err = files.error::<serde_json::Value>("exp.yaml", &[]);
    assert!(err.contains("values: refused"), "{err}");
}
