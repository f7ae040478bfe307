//! TFRecord framing: `len (u64 LE) | masked crc32c(len) | data | masked crc32c(data)`.

use std::io::{self, Write};

/// TensorFlow's CRC mask, so CRCs of data that contains CRCs stay robust.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Writes one record.
pub fn write_record(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let len = (data.len() as u64).to_le_bytes();
    out.write_all(&len)?;
    out.write_all(&masked_crc(&len).to_le_bytes())?;
    out.write_all(data)?;
    out.write_all(&masked_crc(data).to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_length_data_and_crcs() {
        let mut buf = Vec::new();
        write_record(&mut buf, b"123456789").unwrap();
        assert_eq!(buf.len(), 8 + 4 + 9 + 4);
        assert_eq!(&buf[..8], &9u64.to_le_bytes());
        assert_eq!(&buf[12..21], b"123456789");
        // The standard CRC-32C check value, masked as TensorFlow does.
        let expected = 0xe306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8);
        assert_eq!(&buf[21..], &expected.to_le_bytes());
    }
}
