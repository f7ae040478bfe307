//! What a run was made from, recorded in its folder (`provenance.json`):
//! the host build (version, git commit, features), each domain's plugin
//! build (name, version, library file and its SHA-256) and each frozen
//! domain model's checkpoint file and its SHA-256.
//!
//! A resume, `shimmer test` and `shimmer predict` compare what they load
//! now with the record: a frozen checkpoint that changed (a pretraining
//! rerun over it) is refused unless allowed, since the GW was trained on
//! the old encoder; a changed plugin or host build is named, old and new.

use crate::RunDir;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use shimmer_config::Experiment;
use shimmer_data::{PluginBuild, Sources};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

pub use crate::run_dir::PROVENANCE_FILE;

/// The `shimmer` build running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBuild {
    /// Package version.
    pub version: String,
    /// Git commit it was built from,
    /// or `unknown`.
    pub commit: String,
    /// Cargo features it was built with (`cuda`, `fused-kernels`).
    pub features: Vec<String>,
}

static HOST: OnceLock<HostBuild> = OnceLock::new();

/// Records the build of the running binary (its `main` calls this once;
/// library users that do not get `unknown` as the commit).
pub fn register_host_build(build: HostBuild) {
    let _ = HOST.set(build);
}

/// The build registered by [`register_host_build`].
pub fn host_build() -> HostBuild {
    HOST.get().cloned().unwrap_or_else(|| HostBuild {
        version: env!("CARGO_PKG_VERSION").to_string(),
        commit: "unknown".to_string(),
        features: Vec::new(),
    })
}

/// A file a run read, by content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Its path, absolute.
    pub file: PathBuf,
    /// SHA-256 of its bytes.
    pub sha256: String,
}

/// The record of `provenance.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The host that trained (for a resumed run: the latest).
    pub host: HostBuild,
    /// Plugin build of each plugin domain.
    pub plugins: BTreeMap<String, PluginBuild>,
    /// Checkpoint of each domain model loaded from a file.
    pub checkpoints: BTreeMap<String, FileDigest>,
    /// What changed at each resume, oldest first.
    #[serde(default)]
    pub changes: Vec<String>,
    /// The weights the run started from (`workspace.init_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<FileDigest>,
}

impl Provenance {
    /// What `exp` loads now: this host, the builds behind `sources` and
    /// the bytes of every domain model `checkpoint`.
    ///
    /// # Errors
    /// When a checkpoint file cannot be read.
    pub fn of(exp: &Experiment, sources: &Sources) -> Result<Self> {
        let plugins = sources
            .iter()
            .filter_map(|(name, src)| src.plugin_build().map(|b| (name.clone(), b)))
            .collect();
        let mut checkpoints = BTreeMap::new();
        for (name, d) in &exp.domains {
            let Some(file) = &d.model.checkpoint else {
                continue;
            };
            let sha256 = shimmer_sys::fs::sha256_file(file).with_context(|| {
                format!("domain `{name}`: cannot read checkpoint {}", file.display())
            })?;
            let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            checkpoints.insert(name.clone(), FileDigest { file, sha256 });
        }
        let init_from = match exp.workspace.as_ref().and_then(|w| w.init_from.as_ref()) {
            None => None,
            Some(file) => Some(FileDigest {
                sha256: shimmer_sys::fs::sha256_file(file).with_context(|| {
                    format!("workspace.init_from: cannot read {}", file.display())
                })?,
                file: std::path::absolute(file).unwrap_or_else(|_| file.clone()),
            }),
        };
        Ok(Self {
            host: host_build(),
            plugins,
            checkpoints,
            changes: Vec::new(),
            init_from,
        })
    }

    /// The record of `run`, if it has one (runs of older hosts do not).
    ///
    /// # Errors
    /// When the file exists but cannot be read or parsed.
    pub fn read(run: &RunDir) -> Result<Option<Self>> {
        run.read_json(PROVENANCE_FILE, "a provenance record")
    }

    /// Compares what is loaded now (`self`) with `run`'s record (see
    /// [`Provenance::compare`]); returns the record and one note per
    /// difference. A run without a record is refused when it loads frozen
    /// checkpoints, unless `allow_changed_checkpoints`: a deleted record
    /// must not turn the check off.
    ///
    /// # Errors
    /// A missing record with checkpoints to check, or what `compare` refuses.
    pub fn compare_with_run(
        &self,
        run: &RunDir,
        allow_changed_checkpoints: bool,
    ) -> Result<Option<(Self, Vec<String>)>> {
        let Some(recorded) = Self::read(run)? else {
            if self.checkpoints.is_empty() || allow_changed_checkpoints {
                return Ok(None);
            }
            let domains: Vec<&str> = self.checkpoints.keys().map(String::as_str).collect();
            anyhow::bail!(
                "{} has no {PROVENANCE_FILE}: nothing says which checkpoints of the frozen \
                 domain models ({}) this run was trained on, so a changed one cannot be \
                 caught; restore the file, or pass --allow-changed-checkpoints to go on \
                 without the check",
                run.path().display(),
                domains.join(", ")
            );
        };
        let notes = self.compare(&recorded, allow_changed_checkpoints)?;
        Ok(Some((recorded, notes)))
    }

    /// Writes the record into `run`.
    ///
    /// # Errors
    /// When the folder is not writable.
    pub fn write(&self, run: &RunDir) -> Result<()> {
        run.write_json(PROVENANCE_FILE, self)
    }

    /// Compares what is loaded now (`self`) with what `recorded` says the
    /// run was made from, and returns one line per difference.
    ///
    /// # Errors
    /// A changed, missing or new frozen checkpoint unless
    /// `allow_changed_checkpoints`: the run's weights were trained on the
    /// recorded one.
    pub fn compare(&self, recorded: &Self, allow_changed_checkpoints: bool) -> Result<Vec<String>> {
        let mut checkpoint_changes = Vec::new();
        let domains: std::collections::BTreeSet<&String> = recorded
            .checkpoints
            .keys()
            .chain(self.checkpoints.keys())
            .collect();
        for d in domains {
            let (old, new) = (recorded.checkpoints.get(d), self.checkpoints.get(d));
            if old.map(|c| &c.sha256) == new.map(|c| &c.sha256) {
                continue;
            }
            let show = |c: Option<&FileDigest>| match c {
                Some(c) => format!("{} (sha256 {})", c.file.display(), short(&c.sha256)),
                None => "none".to_string(),
            };
            checkpoint_changes.push(format!(
                "domain `{d}`: checkpoint {} when the run was trained, now {}",
                show(old),
                show(new)
            ));
        }
        if !checkpoint_changes.is_empty() && !allow_changed_checkpoints {
            bail!(
                "{}. The run's workspace was trained on the recorded weights; pass \
                 --allow-changed-checkpoints to go on with the new ones",
                checkpoint_changes.join("; ")
            );
        }
        let mut notes = checkpoint_changes;
        for (d, new) in &self.plugins {
            match recorded.plugins.get(d) {
                Some(old) if old.sha256 == new.sha256 => {}
                Some(old) => notes.push(format!(
                    "domain `{d}`: plugin {} {} (sha256 {}) when the run was recorded, now {} {} \
                     (sha256 {}) from {}",
                    old.plugin,
                    old.version,
                    short(&old.sha256),
                    new.plugin,
                    new.version,
                    short(&new.sha256),
                    new.file.display()
                )),
                None => notes.push(format!(
                    "domain `{d}`: plugin {} {} was not in the run's record",
                    new.plugin, new.version
                )),
            }
        }
        if self.host != recorded.host {
            notes.push(format!(
                "host: shimmer {} ({}) when the run was recorded, now {} ({})",
                recorded.host.version, recorded.host.commit, self.host.version, self.host.commit
            ));
        }
        Ok(notes)
    }
}

/// The first 12 hex digits of a digest, enough to tell builds apart.
fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(plugin_sha: &str, checkpoint_sha: &str) -> Provenance {
        Provenance {
            host: host_build(),
            plugins: [(
                "v".to_string(),
                PluginBuild {
                    plugin: "p".into(),
                    version: "1.0".into(),
                    file: "/lib/libp.so".into(),
                    sha256: plugin_sha.into(),
                },
            )]
            .into(),
            checkpoints: [(
                "v".to_string(),
                FileDigest {
                    file: "/runs/v.safetensors".into(),
                    sha256: checkpoint_sha.into(),
                },
            )]
            .into(),
            changes: Vec::new(),
            init_from: None,
        }
    }

    #[test]
    fn changed_checkpoints_are_refused_and_changed_plugins_named() {
        let old = record("aaaaaaaaaaaaaaaa", "cccccccccccccccc");
        assert!(old.compare(&old, false).unwrap().is_empty());
        let rebuilt = record("bbbbbbbbbbbbbbbb", "cccccccccccccccc");
        let notes = rebuilt.compare(&old, false).unwrap();
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("sha256 aaaaaaaaaaaa") && notes[0].contains("sha256 bbbbbbbbbbbb")
        );
        let retrained = record("aaaaaaaaaaaaaaaa", "dddddddddddddddd");
        let err = retrained.compare(&old, false).unwrap_err().to_string();
        assert!(
            err.contains("checkpoint /runs/v.safetensors (sha256 cccccccccccc)"),
            "{err}"
        );
        assert!(err.contains("--allow-changed-checkpoints"), "{err}");
        assert_eq!(retrained.compare(&old, true).unwrap().len(), 1);
    }
}
