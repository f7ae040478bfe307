//! Image grids for TensorBoard: rows of equally sized RGB images (items in
//! columns: originals above what the model made of them), composed into
//! one picture, enlarged and PNG-encoded.

use anyhow::{Result, bail};

/// Pixels between images, before enlarging.
const GAP: u32 = 1;
/// Grey of the gaps.
const GAP_GREY: u8 = 96;

/// Rows of `columns` images of `width x height`, to show as one picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageGrid {
    /// TensorBoard tag (`images/v_to_attr`).
    pub tag: String,
    /// Width of one image.
    pub width: u32,
    /// Height of one image.
    pub height: u32,
    /// Images per row.
    pub columns: usize,
    /// Each row's images, RGB rows top to bottom, image after image.
    pub rows: Vec<Vec<u8>>,
}

impl ImageGrid {
    /// A grid of `rows`, each holding `columns` images of `width x height`.
    ///
    /// # Errors
    /// A row of another length.
    pub fn new(
        tag: impl Into<String>,
        width: u32,
        height: u32,
        columns: usize,
        rows: Vec<Vec<u8>>,
    ) -> Result<Self> {
        let tag = tag.into();
        let want = columns * width as usize * height as usize * 3;
        if let Some(bad) = rows.iter().find(|r| r.len() != want) {
            bail!(
                "image grid `{tag}`: a row holds {} bytes, {columns} images of {width}x{height} need {want}",
                bad.len()
            );
        }
        Ok(Self {
            tag,
            width,
            height,
            columns,
            rows,
        })
    }

    /// The picture: images side by side, rows one under the other, grey
    /// gaps between them, every pixel enlarged to `scale x scale`.
    pub fn compose(&self, scale: u32) -> (u32, u32, Vec<u8>) {
        let (w, h, cols) = (self.width as usize, self.height as usize, self.columns);
        let (gap, s) = (GAP as usize, scale.max(1) as usize);
        let pw = cols * w + (cols + 1) * gap;
        let ph = self.rows.len() * h + (self.rows.len() + 1) * gap;
        let (sw, sh) = (pw * s, ph * s);
        let mut out = vec![GAP_GREY; sw * sh * 3];
        for (r, row) in self.rows.iter().enumerate() {
            for c in 0..cols {
                let img = &row[c * w * h * 3..][..w * h * 3];
                let (x0, y0) = (gap + c * (w + gap), gap + r * (h + gap));
                for y in 0..h {
                    for x in 0..w {
                        let px = &img[(y * w + x) * 3..][..3];
                        for dy in 0..s {
                            let line = ((y0 + y) * s + dy) * sw;
                            for dx in 0..s {
                                let at = (line + (x0 + x) * s + dx) * 3;
                                out[at..at + 3].copy_from_slice(px);
                            }
                        }
                    }
                }
            }
        }
        (sw as u32, sh as u32, out)
    }

    /// The picture enlarged `scale` times, as PNG bytes, with its size.
    ///
    /// # Errors
    /// When the PNG encoder fails.
    pub fn png(&self, scale: u32) -> Result<(Vec<u8>, u32, u32)> {
        let (w, h, rgb) = self.compose(scale);
        let png = shimmer_formats::image::encode_png_rgb(w, h, &rgb)
            .map_err(|e| anyhow::anyhow!("image grid `{}`: {e}", self.tag))?;
        Ok((png, w, h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_put_rows_under_each_other_with_gaps() {
        // Two rows of two 1x1 images: red, green / blue, white.
        let rows = vec![vec![255, 0, 0, 0, 255, 0], vec![0, 0, 255, 255, 255, 255]];
        let g = ImageGrid::new("t", 1, 1, 2, rows).unwrap();
        let (w, h, rgb) = g.compose(2);
        assert_eq!((w, h), (10, 10));
        let px = |x: usize, y: usize| &rgb[(y * 10 + x) * 3..][..3];
        assert_eq!(px(0, 0), [GAP_GREY; 3]);
        assert_eq!(px(2, 2), [255, 0, 0]);
        assert_eq!(px(3, 3), [255, 0, 0]);
        assert_eq!(px(6, 2), [0, 255, 0]);
        assert_eq!(px(2, 6), [0, 0, 255]);
        assert_eq!(px(7, 7), [255, 255, 255]);
        assert!(ImageGrid::new("t", 1, 1, 2, vec![vec![0; 5]]).is_err());
        let (png, pw, ph) = g.png(1).unwrap();
        assert_eq!((pw, ph), (5, 5));
        assert!(png.starts_with(b"\x89PNG"));
    }
}
