//! End-to-end: the data pipeline over real plugin libraries, loaded through
//! the real plugin loader from an experiment's YAML.

use crate::common;

use shimmer_config::Experiment;
use shimmer_data::{DataPipeline, HostBatch, open_sources};
use shimmer_plugin_api::Split;
use shimmer_plugin_host::PluginLibrary;
use std::path::Path;
use std::time::{Duration, Instant};

/// Three random-vectors domains (dims 3, 4, 5) and the `data:` section given.
fn experiment(data: &str) -> Experiment {
    let lib = common::plugin_path("random_vectors");
    let lib = lib.display();
    let yaml = format!(
        r#"
name: data-e2e
seed: 3
domains:
  a: {{ plugin: "{lib}", config: {{ dim: 3, seed: 1, train: 300, val: 70, test: 0 }} }}
  b: {{ plugin: "{lib}", config: {{ dim: 4, seed: 2, train: 200, val: 70, test: 0 }} }}
  c: {{ plugin: "{lib}", kind: vectors, config: {{ dim: 5, seed: 3, train: 250, val: 70, test: 0 }} }}
workspace: {{ flavour: fusion, dim: 8 }}
data:
{data}
"#
    );
    shimmer_config::parse(&yaml, Path::new("data-e2e.yaml")).expect("valid experiment")
}

const GROUPS: &str = r#"
  batch_size: 32
  mode: max_size_cycle
  groups:
    - { domains: [a, b, c], items: { count: 40 }, select: random }
    - { domains: [a] }
    - { domains: [b], items: { range: [50, 200] } }
    - { domains: [c] }
"#;

fn pipeline(exp: &Experiment) -> DataPipeline {
    let sources = open_sources(exp).expect("open plugin domains");
    DataPipeline::build(&exp.data, &sources, exp.seed, None).expect("build pipeline")
}

fn digests(exp: &Experiment, epochs: u64) -> Vec<u64> {
    let p = pipeline(exp);
    let mut out = Vec::new();
    for e in 0..epochs {
        for b in p.train.epoch(e).expect("start epoch") {
            out.push(b.expect("batch").digest());
        }
    }
    for b in p.val.as_ref().expect("val loader").epoch(0).expect("val") {
        out.push(b.expect("val batch").digest());
    }
    out
}

#[test]
fn batches_are_identical_for_1_2_8_workers_with_and_without_cache() {
    let cache_dir = tempfile::tempdir().unwrap();
    let run = |workers: usize, cache: &str| {
        let data = format!(
            "{GROUPS}  workers: {workers}\n  prefetch: {}\n  cache: {cache}\n",
            2 * workers
        );
        digests(&experiment(&data), 2)
    };
    let reference = run(1, "{ enabled: false }");
    // Repeated to at least the largest group (300 items, whole copies):
    // 40 paired -> 320 positions, 10 batches of 32 (drop_last); a: 300 -> 9;
    // b: 150 -> 300 -> 9; c: 250 -> 500 -> 15. max_size_cycle: 15 per
    // epoch, + 3 validation batches (70 items).
    assert_eq!(reference.len(), 2 * 15 + 3);
    for workers in [1, 2, 8] {
        for cache in [
            "{ enabled: false }".to_string(),
            "{ enabled: true }".to_string(),
            format!("{{ dir: \"{}\" }}", cache_dir.path().display()),
        ] {
            assert_eq!(
                run(workers, &cache),
                reference,
                "{workers} workers, cache {cache}"
            );
        }
    }
    // The file cache holds the train and val latents of the three domains.
    assert_eq!(std::fs::read_dir(cache_dir.path()).unwrap().count(), 6);
}

#[test]
fn batches_carry_the_plugin_latents_of_the_planned_items() {
    let exp = experiment(&format!("{GROUPS}  workers: 2\n"));
    let p = pipeline(&exp);
    let lib = PluginLibrary::open(&common::plugin_path("random_vectors")).unwrap();
    let domain_b = lib
        .create_domain(
            "vectors",
            r#"{"dim": 4, "seed": 2, "train": 200, "val": 70, "test": 0}"#,
        )
        .unwrap();
    let batches: Vec<HostBatch> = p.train.epoch(0).unwrap().map(Result::unwrap).collect();
    let first = &batches[0];
    assert_eq!(
        first.groups.keys().collect::<Vec<_>>(),
        ["a,b,c", "a", "b", "c"]
    );
    for (name, g) in &first.groups {
        for latents in g.domains.values() {
            assert_eq!(latents.rows(), 32, "{name}");
        }
    }
    let paired = &first.groups["a,b,c"];
    assert!(paired.items.iter().all(|&i| i < 200));
    let mut want = vec![0.0; 32 * 4];
    domain_b
        .load(Split::Train, &paired.items, &mut want)
        .unwrap();
    assert_eq!(paired.domains["b"].data(), &want[..]);
    let single_b = &first.groups["b"];
    assert!(single_b.items.iter().all(|&i| (50..200).contains(&i)));
    // The same 40 paired items come back, in a new order each epoch.
    let mut seen: Vec<u64> = batches
        .iter()
        .flat_map(|b| b.groups["a,b,c"].items.iter().copied())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 40);
}

#[test]
fn validation_pairs_every_domain_and_each_alone() {
    let p = pipeline(&experiment(&format!("{GROUPS}  workers: 2\n")));
    let val: Vec<HostBatch> = p
        .val
        .as_ref()
        .unwrap()
        .epoch(0)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // 70 items in batches of 32, in order, last batch kept.
    let rows: Vec<usize> = val.iter().map(|b| b.groups["a,b,c"].rows()).collect();
    assert_eq!(rows, [32, 32, 6]);
    assert_eq!(val[2].groups["a,b,c"].items[0], 64);
    for b in &val {
        assert_eq!(
            b.groups.keys().collect::<Vec<_>>(),
            ["a,b,c", "a", "b", "c"]
        );
        assert_eq!(b.groups["c"].domains["c"], b.groups["a,b,c"].domains["c"]);
    }
    assert!(p.test.is_none(), "the test split is empty");
}

fn faulty_experiment(fault: &str, cache: bool) -> Experiment {
    let lib = common::plugin_path("faulty_plugin");
    let yaml = format!(
        r#"
name: faulty
domains:
  vision: {{ plugin: "{}", config: {{ dim: 4, items: 64, {fault} }} }}
workspace: {{ flavour: fusion, dim: 8 }}
data:
  batch_size: 8
  workers: 2
  cache: {{ enabled: {cache} }}
  groups: [{{ domains: [vision] }}]
  val: []
  test: []
"#,
        lib.display()
    );
    shimmer_config::parse(&yaml, Path::new("faulty.yaml")).unwrap()
}

fn first_error(exp: &Experiment) -> String {
    let sources = open_sources(exp).unwrap();
    let err = match DataPipeline::build(&exp.data, &sources, 0, None) {
        Err(e) => e,
        Ok(p) => p
            .train
            .epoch(0)
            .unwrap()
            .find_map(Result::err)
            .expect("a batch fails"),
    };
    format!("{err:#}")
}

#[test]
fn a_failing_plugin_item_names_the_domain_and_the_index() {
    for cache in [false, true] {
        let msg = first_error(&faulty_experiment("fail_on: 45", cache));
        assert!(msg.contains("domain `vision`"), "{msg}");
        assert!(msg.contains("train item 45"), "{msg}");
        assert!(msg.contains("bad header"), "{msg}");
        assert!(msg.contains("faulty"), "names the plugin: {msg}");
        let msg = first_error(&faulty_experiment("panic_on: 13", cache));
        assert!(
            msg.contains("domain `vision`") && msg.contains("train item 13"),
            "{msg}"
        );
        assert!(msg.contains("corrupted on disk"), "{msg}");
    }
}

#[test]
fn stopping_early_returns_promptly() {
    let data = "  batch_size: 4\n  workers: 8\n  prefetch: 16\n  cache: { enabled: false }\n  groups: [{ domains: [a, b, c], items: { count: 200 } }]\n";
    let p = pipeline(&experiment(data));
    assert_eq!(p.train.len(), 50);
    let t = Instant::now();
    for _ in 0..3 {
        let mut epoch = p.train.epoch(0).unwrap();
        epoch.next().unwrap().unwrap();
        drop(epoch);
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
