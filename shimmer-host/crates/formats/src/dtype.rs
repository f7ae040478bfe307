//! Element types of numeric arrays on disk and their conversion to the
//! `f32` the host trains on (or to indices).

use std::fmt;

/// A number format of one array element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Element {
    /// `bool`, one byte, non-zero is true.
    Bool,
    /// Signed integers of 1, 2, 4 and 8 bytes.
    I8,
    /// 2-byte signed integer.
    I16,
    /// 4-byte signed integer.
    I32,
    /// 8-byte signed integer.
    I64,
    /// 1-byte unsigned integer.
    U8,
    /// 2-byte unsigned integer.
    U16,
    /// 4-byte unsigned integer.
    U32,
    /// 8-byte unsigned integer.
    U64,
    /// IEEE half precision.
    F16,
    /// bfloat16 (safetensors only).
    BF16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
}

impl Element {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Element::Bool | Element::I8 | Element::U8 => 1,
            Element::I16 | Element::U16 | Element::F16 | Element::BF16 => 2,
            Element::I32 | Element::U32 | Element::F32 => 4,
            Element::I64 | Element::U64 | Element::F64 => 8,
        }
    }

    /// Whether the element is an integer or a boolean (valid for indices).
    pub fn is_integer(self) -> bool {
        !matches!(
            self,
            Element::F16 | Element::BF16 | Element::F32 | Element::F64
        )
    }
}

/// Byte order of multi-byte elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// Least significant byte first (x86, ARM, NumPy's `<`).
    Little,
    /// Most significant byte first (NumPy's `>`).
    Big,
}

/// An element type with its byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DType {
    /// The number format.
    pub element: Element,
    /// The byte order (irrelevant for one-byte elements).
    pub order: ByteOrder,
}

impl fmt::Display for DType {
    /// NumPy's spelling: `<f4`, `>i8`, `|b1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, bf16) = match self.element {
            Element::Bool => ('b', false),
            Element::I8 | Element::I16 | Element::I32 | Element::I64 => ('i', false),
            Element::U8 | Element::U16 | Element::U32 | Element::U64 => ('u', false),
            Element::F16 | Element::F32 | Element::F64 => ('f', false),
            Element::BF16 => ('f', true),
        };
        if bf16 {
            return f.write_str("bfloat16");
        }
        let order = match (self.element.size(), self.order) {
            (1, _) => '|',
            (_, ByteOrder::Little) => '<',
            (_, ByteOrder::Big) => '>',
        };
        write!(f, "{order}{kind}{}", self.element.size())
    }
}

macro_rules! read_as {
    ($t:ty, $bytes:expr, $order:expr) => {{
        let arr: [u8; std::mem::size_of::<$t>()] =
            $bytes.try_into().unwrap_or([0; std::mem::size_of::<$t>()]);
        match $order {
            ByteOrder::Little => <$t>::from_le_bytes(arr),
            ByteOrder::Big => <$t>::from_be_bytes(arr),
        }
    }};
}

impl DType {
    /// A little-endian type (safetensors' only order).
    pub fn little(element: Element) -> Self {
        Self {
            element,
            order: ByteOrder::Little,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        self.element.size()
    }

    /// One element (`bytes.len() == self.size()`) as `f32`, rounded to
    /// nearest as NumPy's `astype(np.float32)` does.
    #[inline]
    pub fn to_f32(self, bytes: &[u8]) -> f32 {
        match self.element {
            Element::Bool => f32::from(u8::from(bytes[0] != 0)),
            Element::I8 => f32::from(bytes[0] as i8),
            Element::U8 => f32::from(bytes[0]),
            Element::I16 => f32::from(read_as!(i16, bytes, self.order)),
            Element::U16 => f32::from(read_as!(u16, bytes, self.order)),
            Element::I32 => read_as!(i32, bytes, self.order) as f32,
            Element::U32 => read_as!(u32, bytes, self.order) as f32,
            Element::I64 => read_as!(i64, bytes, self.order) as f32,
            Element::U64 => read_as!(u64, bytes, self.order) as f32,
            Element::F16 => half::f16::from_bits(read_as!(u16, bytes, self.order)).to_f32(),
            Element::BF16 => half::bf16::from_bits(read_as!(u16, bytes, self.order)).to_f32(),
            Element::F32 => read_as!(f32, bytes, self.order),
            Element::F64 => read_as!(f64, bytes, self.order) as f32,
        }
    }

    /// Converts contiguous elements (`bytes.len() == out.len() * size`).
    pub fn to_f32_slice(self, bytes: &[u8], out: &mut [f32]) {
        let size = self.size();
        if self.element == Element::F32 && self.order == ByteOrder::Little {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            return;
        }
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(size)) {
            *o = self.to_f32(b);
        }
    }

    /// One element as an integer, or `None` for a floating-point type or an
    /// unsigned value above `i64::MAX`.
    pub fn to_i64(self, bytes: &[u8]) -> Option<i64> {
        Some(match self.element {
            Element::Bool => i64::from(bytes[0] != 0),
            Element::I8 => i64::from(bytes[0] as i8),
            Element::U8 => i64::from(bytes[0]),
            Element::I16 => i64::from(read_as!(i16, bytes, self.order)),
            Element::U16 => i64::from(read_as!(u16, bytes, self.order)),
            Element::I32 => i64::from(read_as!(i32, bytes, self.order)),
            Element::U32 => i64::from(read_as!(u32, bytes, self.order)),
            Element::I64 => read_as!(i64, bytes, self.order),
            Element::U64 => i64::try_from(read_as!(u64, bytes, self.order)).ok()?,
            Element::F16 | Element::BF16 | Element::F32 | Element::F64 => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_converts_in_both_byte_orders() {
        let cases: [(Element, f64); 11] = [
            (Element::I8, -5.0),
            (Element::I16, -300.0),
            (Element::I32, -70000.0),
            (Element::I64, -5_000_000_000.0),
            (Element::U8, 200.0),
            (Element::U16, 60000.0),
            (Element::U32, 4_000_000_000.0),
            (Element::U64, 9_000_000_000.0),
            (Element::F16, 1.5),
            (Element::F32, -2.25),
            (Element::F64, 0.1),
        ];
        for (element, value) in cases {
            let le: Vec<u8> = match element {
                Element::I8 => (value as i8).to_le_bytes().to_vec(),
                Element::I16 => (value as i16).to_le_bytes().to_vec(),
                Element::I32 => (value as i32).to_le_bytes().to_vec(),
                Element::I64 => (value as i64).to_le_bytes().to_vec(),
                Element::U8 => (value as u8).to_le_bytes().to_vec(),
                Element::U16 => (value as u16).to_le_bytes().to_vec(),
                Element::U32 => (value as u32).to_le_bytes().to_vec(),
                Element::U64 => (value as u64).to_le_bytes().to_vec(),
                Element::F16 => half::f16::from_f64(value).to_le_bytes().to_vec(),
                Element::F32 => (value as f32).to_le_bytes().to_vec(),
                _ => value.to_le_bytes().to_vec(),
            };
            let mut be = le.clone();
            be.reverse();
            let little = DType::little(element);
            let big = DType {
                element,
                order: ByteOrder::Big,
            };
            assert_eq!(little.to_f32(&le), value as f32, "{little}");
            assert_eq!(big.to_f32(&be), value as f32, "{big}");
            if element.is_integer() {
                assert_eq!(little.to_i64(&le), Some(value as i64));
                assert_eq!(big.to_i64(&be), Some(value as i64));
            } else {
                assert_eq!(little.to_i64(&le), None);
            }
        }
        assert_eq!(DType::little(Element::Bool).to_f32(&[2]), 1.0);
        assert_eq!(
            DType::little(Element::U64).to_i64(&u64::MAX.to_le_bytes()),
            None
        );
    }

    #[test]
    fn names_follow_numpy() {
        assert_eq!(DType::little(Element::F32).to_string(), "<f4");
        let big = DType {
            element: Element::I64,
            order: ByteOrder::Big,
        };
        assert_eq!(big.to_string(), ">i8");
        assert_eq!(DType::little(Element::U8).to_string(), "|u1");
        assert_eq!(DType::little(Element::Bool).to_string(), "|b1");
    }

    #[test]
    fn slices_convert_like_elements() {
        let values = [1.0f32, -2.5, 3.25];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = [0.0; 3];
        DType::little(Element::F32).to_f32_slice(&bytes, &mut out);
        assert_eq!(out, values);
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|v| f64::from(*v).to_be_bytes())
            .collect();
        let big = DType {
            element: Element::F64,
            order: ByteOrder::Big,
        };
        big.to_f32_slice(&bytes, &mut out);
        assert_eq!(out, values);
    }
}
