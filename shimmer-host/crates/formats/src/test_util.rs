//! Helpers of the unit tests.

use std::path::Path;

/// Writes a version-1 `.npy` file by hand (the layout NumPy's
/// `format.write_array` uses).
pub(crate) fn write_npy(path: &Path, descr: &str, fortran: bool, shape: &str, data: &[u8]) {
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
        if fortran { "True" } else { "False" }
    );
    let mut header = dict.into_bytes();
    let total = 10 + header.len() + 1;
    let pad = (64 - total % 64) % 64;
    header.extend(std::iter::repeat_n(b' ', pad));
    header.push(b'\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.extend([1u8, 0]);
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header);
    out.extend(data);
    std::fs::write(path, out).unwrap();
}
