//! Shared harness of the end-to-end tests: builds the `shimmer` binary and
//! the plugins once, and finds them in the target folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Crates the end-to-end tests need built: the binary, the shipped plugins
/// and the test fixture plugins.
const PACKAGES: &[&str] = &[
    "shimmer-host",
    "random-vectors",
    "arrays",
    "simple-shapes",
    "abi-v1-0-plugin",
    "abi-v2-plugin",
    "faulty-plugin",
    "not-a-plugin",
    "data-entry-plugin",
    "versioned-plugin",
];

/// The target folder of this profile (`target/debug`), parent of the
/// `deps/` folder the test executable runs from.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable sits in target/<profile>/deps")
        .to_path_buf()
}

/// Builds the binary and the plugins (once per test process; a no-op when
/// up to date) and returns the target folder.
pub fn build_all() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut cmd = Command::new(cargo);
        cmd.arg("build").arg("--quiet");
        for p in PACKAGES {
            cmd.arg("-p").arg(p);
        }
        if target_dir().file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        cmd.current_dir(workspace_root());
        let status = cmd.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build of the binary and plugins failed"
        );
        target_dir()
    })
}

/// A `Command` running the built `shimmer` binary.
pub fn shimmer() -> Command {
    let mut cmd =
        Command::new(build_all().join(format!("shimmer{}", std::env::consts::EXE_SUFFIX)));
    cmd.env_remove("SHIMMER_PLUGIN_PATH");
    cmd
}

/// Path of a built plugin library by its crate's lib name (`random_vectors`).
pub fn plugin_path(lib_name: &str) -> PathBuf {
    build_all().join(format!(
        "{}{lib_name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

/// The workspace root (for `experiments/` and `../shared/`).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The golden parity data folder shipped beside the checkout.
pub fn parity_dir() -> PathBuf {
    workspace_root().join("../shared/parity")
}

/// Python packages the tests read files with: TensorBoard's own event
/// reader, NumPy (which TensorBoard brings), safetensors and Pillow.
pub const TEST_PYTHON_PACKAGES: &[&str] = &["tensorboard", "safetensors", "pillow"];

/// A Python interpreter that can import [`TEST_PYTHON_PACKAGES`]:
/// `$SHIMMER_TEST_PYTHON`, else `python3` if it has them, else a virtualenv
/// under the target folder into which they are installed from PyPI (once).
pub fn test_python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let has_all = |py: &Path| {
                Command::new(py)
                    .args([
                        "-c",
                        "import tensorboard, numpy, safetensors.numpy, PIL.Image",
                    ])
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            if let Some(py) = std::env::var_os("SHIMMER_TEST_PYTHON") {
                return PathBuf::from(py);
            }
            let system = PathBuf::from("python3");
            if has_all(&system) {
                return system;
            }
            let venv = target_dir().join("test-python-venv");
            let py = venv.join("bin/python");
            if !has_all(&py) {
                let ok = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .status()
                    .is_ok_and(|s| s.success())
                    && Command::new(&py)
                        .args(["-m", "pip", "install", "--quiet"])
                        .args(TEST_PYTHON_PACKAGES)
                        .status()
                        .is_ok_and(|s| s.success());
                assert!(
                    ok,
                    "cannot install {} from PyPI into {}",
                    TEST_PYTHON_PACKAGES.join(", "),
                    venv.display()
                );
            }
            py
        })
        .clone()
}

/// Reads a run folder with TensorBoard's own reader (`tests/tb_read.py`).
pub fn read_tensorboard(run_dir: &Path) -> serde_json::Value {
    let out = Command::new(test_python())
        .arg(workspace_root().join("tests/tb_read.py"))
        .arg(run_dir)
        .output()
        .expect("run the TensorBoard reader");
    assert!(
        out.status.success(),
        "TensorBoard reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reader prints JSON")
}

/// Runs the tutorial's pretraining steps (`experiments/tutorial/pretrain_*.yaml`,
/// if any) in `cwd`, where the tutorial then finds the pretrained domain
/// models (`runs/tutorial/pretrained/`, relative to the working folder).
pub fn pretrain_tutorial(cwd: &Path) {
    let dir = workspace_root().join("experiments/tutorial");
    let mut steps: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("pretrain") && n.ends_with(".yaml"))
        })
        .collect();
    steps.sort();
    for step in steps {
        let out = shimmer()
            .current_dir(cwd)
            .arg("run")
            .arg(&step)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pretraining {} failed: {}",
            step.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
