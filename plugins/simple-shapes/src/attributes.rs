//! The attributes of one Simple Shapes item: how they are drawn at random
//! (`SIMPLE_SHAPES.md`), read from a labels row, and turned into (and back
//! from) the 11-value attribute vector shimmer-ssd's attribute domain sees.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shimmer_plugin_api::Split;
use std::f32::consts::TAU;

/// Number of shape classes: 0 diamond, 1 egg, 2 triangle.
pub const CLASSES: usize = 3;
/// Values of the attribute vector: one-hot class, x, y, size, cos r, sin r, r, g, b.
pub const ATTR_LEN: usize = 11;
/// Columns of a `{split}_labels.npy` row.
pub const LABEL_LEN: usize = 12;
/// Side of an image in pixels.
pub const IMAGE_SIZE: usize = 32;
/// Smallest and largest shape size (pixels).
pub const MIN_SIZE: f32 = 7.0;
/// Largest shape size.
pub const MAX_SIZE: f32 = 14.0;
/// Smallest location coordinate: `MAX_SIZE / 2`.
const MIN_LOC: f32 = MAX_SIZE / 2.0;
/// Span the location is scaled by in the attribute vector: `32 - MAX_SIZE`
/// (locations themselves run over `7..25`, as in shimmer-ssd).
const LOC_SPAN: f32 = IMAGE_SIZE as f32 - MAX_SIZE;

/// One item's attributes, as the labels file stores them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attributes {
    /// 0 diamond, 1 egg, 2 triangle.
    pub class: usize,
    /// Location, pixels, y up.
    pub x: f32,
    /// Location, pixels, y up.
    pub y: f32,
    /// Size, pixels.
    pub size: f32,
    /// Rotation, radians in [0, 2π).
    pub rotation: f32,
    /// Colour, RGB.
    pub rgb: [u8; 3],
    /// Colour in OpenCV's 8-bit HLS (H in 0..=180).
    pub hls: [u8; 3],
    /// The unpaired scalar in [0, 1).
    pub unpaired: f32,
}

/// The ranges attributes are drawn from; the default is the dataset's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranges {
    /// Shape sizes, pixels, both ends included.
    pub size: [u32; 2],
    /// Locations on each axis, pixels, both ends included.
    pub location: [u32; 2],
    /// Rotations, radians, `[from, to)` (one value when equal).
    pub rotation: [f32; 2],
}

impl Default for Ranges {
    /// Simple Shapes': sizes 7..=14, locations 7..=24, rotations [0, 2π).
    fn default() -> Self {
        Self {
            size: [MIN_SIZE as u32, MAX_SIZE as u32],
            location: [MIN_LOC as u32, IMAGE_SIZE as u32 - MIN_LOC as u32 - 1],
            rotation: [0.0, TAU],
        }
    }
}

impl Ranges {
    /// Checks that every range is ordered and the shapes stay on the image.
    pub fn check(&self) -> Result<(), String> {
        let [s0, s1] = self.size;
        let [l0, l1] = self.location;
        let [r0, r1] = self.rotation;
        if !(1 <= s0 && s0 <= s1 && s1 <= IMAGE_SIZE as u32) {
            return Err(format!(
                "`sizes` [{s0}, {s1}] must be ordered, within 1..=32"
            ));
        }
        if !(l0 <= l1 && l1 < IMAGE_SIZE as u32) {
            return Err(format!(
                "`locations` [{l0}, {l1}] must be ordered, within 0..=31"
            ));
        }
        if !(r0.is_finite() && r1.is_finite() && r0 <= r1) {
            return Err(format!(
                "`rotations` [{r0}, {r1}] must be finite and ordered"
            ));
        }
        Ok(())
    }
}

/// The random generator of one item: seeded from everything that
/// identifies it, so any number of loader threads, in any order, draw the
/// same item.
fn item_rng(seed: u64, split: Split, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&u64::from(split.code()).to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    key[24..].copy_from_slice(b"shapes\0\0");
    ChaCha8Rng::from_seed(key)
}

impl Attributes {
    /// Draws item `index` of `split` with the distributions of Simple
    /// Shapes: class uniform over 3, integer size in 7..=14, integer
    /// location in 7..=24 on each axis, rotation uniform in [0, 2π), colour
    /// drawn as OpenCV HLS integers (H 0..=180, L 46..=255, S 0..=255).
    /// Other `ranges` give easier or harder variants (one pose, say).
    pub fn sample(seed: u64, split: Split, index: u64, ranges: &Ranges) -> Self {
        let mut rng = item_rng(seed, split, index);
        let class = rng.random_range(0..CLASSES);
        let size = rng.random_range(ranges.size[0]..=ranges.size[1]) as f32;
        let locations = ranges.location[0]..=ranges.location[1];
        let x = rng.random_range(locations.clone()) as f32;
        let y = rng.random_range(locations) as f32;
        let [r0, r1] = ranges.rotation;
        let rotation = if r1 > r0 {
            rng.random_range(r0..r1)
        } else {
            r0
        };
        let hls = [
            rng.random_range(0..=180u8),
            rng.random_range(46..=255u8),
            rng.random_range(0..=255u8),
        ];
        let unpaired = rng.random_range(0.0..1.0);
        Self {
            class,
            x,
            y,
            size,
            rotation,
            rgb: hls_to_rgb(hls),
            hls,
            unpaired,
        }
    }

    /// Reads a `{split}_labels.npy` row: class, x, y, size, rotation, r, g,
    /// b, h, l, s, unpaired.
    pub fn from_label_row(row: &[f32]) -> Result<Self, String> {
        if row.len() != LABEL_LEN {
            return Err(format!(
                "a labels row has {} values, not {LABEL_LEN}",
                row.len()
            ));
        }
        let byte = |v: f32| -> Result<u8, String> {
            if (0.0..=255.0).contains(&v) && v.fract() == 0.0 {
                Ok(v as u8)
            } else {
                Err(format!("colour value {v} is not an integer in 0..=255"))
            }
        };
        let class = row[0];
        if !(class.fract() == 0.0 && (0.0..CLASSES as f32).contains(&class)) {
            return Err(format!("class {class} is not 0, 1 or 2"));
        }
        if let Some(bad) = row.iter().find(|v| !v.is_finite()) {
            return Err(format!("the row holds {bad}"));
        }
        Ok(Self {
            class: class as usize,
            x: row[1],
            y: row[2],
            size: row[3],
            rotation: row[4],
            rgb: [byte(row[5])?, byte(row[6])?, byte(row[7])?],
            hls: [byte(row[8])?, byte(row[9])?, byte(row[10])?],
            unpaired: row[11],
        })
    }

    /// The labels row of these attributes.
    #[cfg(test)]
    pub fn label_row(&self) -> [f32; LABEL_LEN] {
        [
            self.class as f32,
            self.x,
            self.y,
            self.size,
            self.rotation,
            f32::from(self.rgb[0]),
            f32::from(self.rgb[1]),
            f32::from(self.rgb[2]),
            f32::from(self.hls[0]),
            f32::from(self.hls[1]),
            f32::from(self.hls[2]),
            self.unpaired,
        ]
    }

    /// shimmer-ssd's attribute vector: one-hot class (3), then
    /// `((x - 7) / 18) * 2 - 1`, the same for y, `((size - 7) / 7) * 2 - 1`,
    /// `cos r`, `sin r`, and each colour channel `c / 255 * 2 - 1`.
    pub fn vector(&self) -> [f32; ATTR_LEN] {
        let mut v = [0.0; ATTR_LEN];
        v[self.class] = 1.0;
        v[3] = (self.x - MIN_LOC) / LOC_SPAN * 2.0 - 1.0;
        v[4] = (self.y - MIN_LOC) / LOC_SPAN * 2.0 - 1.0;
        v[5] = (self.size - MIN_SIZE) / (MAX_SIZE - MIN_SIZE) * 2.0 - 1.0;
        v[6] = self.rotation.cos();
        v[7] = self.rotation.sin();
        for c in 0..3 {
            v[8 + c] = f32::from(self.rgb[c]) / 255.0 * 2.0 - 1.0;
        }
        v
    }

    /// The attributes an attribute vector stands for (a prediction): class
    /// by argmax, rotation by `atan2(sin, cos)` in [0, 2π), everything
    /// clamped to the dataset's ranges. HLS and the unpaired value are not
    /// in the vector (zero).
    pub fn from_vector(v: &[f32]) -> Self {
        let class = (0..CLASSES)
            .max_by(|&a, &b| v[a].total_cmp(&v[b]))
            .unwrap_or(0);
        let unit = |k: usize| ((v[k].clamp(-1.0, 1.0) + 1.0) / 2.0).clamp(0.0, 1.0);
        let rotation = v[7].atan2(v[6]).rem_euclid(TAU);
        let mut rgb = [0u8; 3];
        for (c, out) in rgb.iter_mut().enumerate() {
            *out = (unit(8 + c) * 255.0).round() as u8;
        }
        Self {
            class,
            x: MIN_LOC + unit(3) * LOC_SPAN,
            y: MIN_LOC + unit(4) * LOC_SPAN,
            size: MIN_SIZE + unit(5) * (MAX_SIZE - MIN_SIZE),
            rotation: if rotation.is_finite() { rotation } else { 0.0 },
            rgb,
            hls: [0; 3],
            unpaired: 0.0,
        }
    }
}

/// OpenCV's `COLOR_HLS2RGB` for 8-bit images: H in 0..=180 (half
/// degrees), L and S in 0..=255, to RGB rounded to the nearest integer.
pub fn hls_to_rgb([h, l, s]: [u8; 3]) -> [u8; 3] {
    let (h, l, s) = (
        f32::from(h) * 2.0,
        f32::from(l) / 255.0,
        f32::from(s) / 255.0,
    );
    let (r, g, b) = if s == 0.0 {
        (l, l, l)
    } else {
        let p2 = if l <= 0.5 {
            l * (1.0 + s)
        } else {
            l + s - l * s
        };
        let p1 = 2.0 * l - p2;
        let mut h = h / 60.0;
        while h >= 6.0 {
            h -= 6.0;
        }
        let sector = h.floor() as usize;
        let h = h - sector as f32;
        let tab = [p2, p1, p1 + (p2 - p1) * (1.0 - h), p1 + (p2 - p1) * h];
        // OpenCV's table gives (b, g, r) per sector.
        const SECTORS: [[usize; 3]; 6] = [
            [1, 3, 0],
            [1, 0, 2],
            [3, 0, 1],
            [0, 2, 1],
            [0, 1, 3],
            [2, 1, 0],
        ];
        let [bi, gi, ri] = SECTORS[sector.min(5)];
        (tab[ri], tab[gi], tab[bi])
    };
    let byte = |v: f32| (v * 255.0).round().clamp(0.0, 255.0) as u8;
    [byte(r), byte(g), byte(b)]
}
