//! End-to-end: files shimmer wrote and reads back. A checkpoint stripped of
//! its checksum (the key renamed, a weight flipped) is refused by every
//! command that loads one; a latent cache file that fails its checks is
//! reported and rebuilt, and a special file at a cache path is refused at
//! once.

use crate::common;
use crate::refusals::{refused, strs, validate_args};
use crate::run::{pretrained, run_args, stderr, tutorial_args};

use std::path::{Path, PathBuf};
use std::process::Command;

/// Renames `from` to `to` (same length) in the header of the safetensors
/// file at `path`, so the header length stays valid, and flips a bit of its
/// last byte (a tensor's).
fn strip_and_flip(path: &Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = &mut bytes[8..8 + header_len];
    let at = header
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from} not in the header of {}", path.display()));
    header[at..at + to.len()].copy_from_slice(to.as_bytes());
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(path, &bytes).unwrap();
}

/// Runs `shimmer` with `args` from the workspace root.
fn shimmer(args: &[&str]) -> std::process::Output {
    common::shimmer()
        .args(args)
        .current_dir(common::workspace_root())
        .output()
        .unwrap()
}

#[test]
fn a_checkpoint_stripped_of_its_checksum_is_refused_by_every_command() {
    let key = shimmer_formats::checksum::CHECKSUM_KEY;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = run_args(&tutorial_args(&dir, &["training.max_epochs=1"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let checkpoints: Vec<PathBuf> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    assert!(
        checkpoints.iter().any(|p| p.ends_with("last.safetensors")),
        "{checkpoints:?}"
    );
    for (i, ck) in checkpoints.iter().enumerate() {
        // Still a `shimmer.` key for some, out of the namespace for others:
        // the writer entry and the trainer's tensors still say whose file.
        let to = if i % 2 == 0 {
            "shimmer.crc32_"
        } else {
            "xhimmer.crc32c"
        };
        strip_and_flip(ck, key, to);
    }
    let d = dir.to_str().unwrap();
    let x = tmp.path().join("x.safetensors");
    let x = x.to_str().unwrap();
    let needles = [
        "checkpoint",
        "has no checksum",
        "it was altered or truncated",
    ];
    refused(&["run", "--resume", d], &needles);
    refused(&["test", d], &needles);
    refused(&["export", d, "--out", x], &needles);
    refused(&["predict", d, "--out", x], &needles);
    assert!(!Path::new(x).exists());

    // A frozen domain model's weights, written by `pretrain.save_to`.
    let domain1 = pretrained()[0]
        .strip_prefix("domains.domain1.model.checkpoint=")
        .unwrap();
    let copy = tmp.path().join("domain1.safetensors");
    std::fs::copy(domain1, &copy).unwrap();
    strip_and_flip(&copy, key, "shimmer.crc32_");
    let set = format!("domains.domain1.model.checkpoint={}", copy.display());
    let args = validate_args(&[&set]);
    refused(
        &strs(&args),
        &[
            copy.to_str().unwrap(),
            "has no checksum",
            "altered or truncated",
        ],
    );
}

/// The tutorial's `validate` with its latent cache in `cache`.
fn validate_cached(cache: &Path) -> std::process::Output {
    let set = format!("data.cache.dir={}", cache.display());
    let args = validate_args(&[&set]);
    shimmer(&strs(&args))
}

/// The cache files of `cache`, in name order.
fn cache_files(cache: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Replaces every value of the cache file at `path` by NaN and writes the
/// CRC-32C of the result, so only the finiteness check can catch it.
fn fill_with_nan(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    let key_len = word(8);
    let len = word(16 + key_len + 8);
    let start = 16 + key_len + 16;
    assert_eq!(
        bytes.len(),
        start + 4 * len + 4,
        "layout of {}",
        path.display()
    );
    for v in bytes[start..start + 4 * len].chunks_exact_mut(4) {
        v.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    let crc = shimmer_formats::checksum::crc32c_append(0, &bytes[..start + 4 * len]);
    let end = bytes.len();
    bytes[end - 4..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path, &bytes).unwrap();
}

#[test]
fn damaged_latent_cache_files_are_rebuilt_and_special_files_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let out = validate_cached(&cache);
    assert!(out.status.success(), "{}", stderr(&out));
    let files = cache_files(&cache);
    let train = files
        .iter()
        .find(|p| p.to_str().unwrap().ends_with("-train.latents"))
        .unwrap_or_else(|| panic!("no train cache file in {files:?}"))
        .clone();
    let good = std::fs::read(&train).unwrap();
    assert_eq!(&good[..8], b"SHMRLAT2");
    let name = train.to_str().unwrap();

    // A flipped bit: a warning naming the file and why, then a rebuild.
    let mut bad = good.clone();
    let mid = good.len() / 2;
    bad[mid] ^= 0x08;
    std::fs::write(&train, &bad).unwrap();
    let out = validate_cached(&cache);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let warning = err
        .lines()
        .find(|l| l.starts_with("warning:") && l.contains(name))
        .unwrap_or_else(|| panic!("no warning about {name}: {err}"));
    assert!(
        warning.contains("is corrupt") && warning.contains("rebuilding it"),
        "{warning}"
    );
    assert_eq!(std::fs::read(&train).unwrap(), good, "rewritten");

    // All NaN under a valid checksum: rebuilt too, and the run trains.
    fill_with_nan(&train);
    let set = format!("data.cache.dir={}", cache.display());
    let out = run_args(&tutorial_args(
        &tmp.path().join("run"),
        &["training.max_epochs=1", &set],
    ));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.lines().any(|l| l.starts_with("warning:")
            && l.contains(name)
            && l.contains("non-finite value (NaN")),
        "{err}"
    );
    assert_eq!(std::fs::read(&train).unwrap(), good, "rewritten");

    // An older format is rebuilt without an error.
    let mut old = good.clone();
    old[..8].copy_from_slice(b"SHMRLAT1");
    std::fs::write(&train, &old).unwrap();
    let out = validate_cached(&cache);
    let err = stderr(&out);
    assert!(
        out.status.success() && err.contains("older format"),
        "{err}"
    );

    // A FIFO where the file goes: refused at once, and left in place.
    std::fs::remove_file(&train).unwrap();
    let made = Command::new("mkfifo").arg(&train).status().unwrap();
    assert!(made.success());
    let set = format!("data.cache.dir={}", cache.display());
    let args = validate_args(&[&set]);
    refused(&strs(&args), &[name, "is a FIFO, not a regular file"]);
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&train).unwrap().file_type().is_fifo());
}
