use crate::common;
#[test]
fn binary_builds_and_prints_help() {
    let out = common::shimmer().arg("--help").output().unwrap();
    assert!(out.status.success());
}
