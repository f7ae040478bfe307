//! PNG images: one file read into `f32` values in [0, 1], channels first,
//! its size and colour type checked against what the caller declared; a
//! folder of `{index}.png` files as a split of items; and RGB images
//! written back to PNG (for TensorBoard and documentation).

use crate::array::{product, size_text};
use crate::error::{FormatError, Result, excerpt, io_text};
use crate::file::open_regular;
use png::{BitDepth, ColorType, Transformations};
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// Largest PNG file read (bytes): far above any image a GW trains on.
pub const MAX_PNG_BYTES: u64 = 64 << 20;

/// The shape an image must have: channels (1 grey, 3 RGB, 4 RGBA), height
/// and width in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageShape {
    /// 1 (grey), 3 (RGB) or 4 (RGBA).
    pub channels: usize,
    /// Rows of pixels.
    pub height: usize,
    /// Columns of pixels.
    pub width: usize,
}

impl ImageShape {
    /// Values of one image (`channels * height * width`), saturated at
    /// `usize::MAX` when that overflows (which [`ImageShape::check`]
    /// refuses).
    pub fn len(&self) -> usize {
        self.checked_len().unwrap_or(usize::MAX)
    }

    /// Values of one image, or `None` when their number (or their bytes as
    /// `f32`) overflows: a declared shape is untrusted input.
    pub fn checked_len(&self) -> Option<usize> {
        product(&[self.channels, self.height, self.width])
            .filter(|n| n.checked_mul(std::mem::size_of::<f32>()).is_some())
    }

    /// Whether the image has no pixel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the channel count and size.
    ///
    /// # Errors
    /// A channel count other than 1, 3 or 4, an empty image, or one whose
    /// declared size overflows.
    pub fn check(&self) -> std::result::Result<(), String> {
        if ![1, 3, 4].contains(&self.channels) {
            return Err(format!(
                "{} channels: images have 1 (grey), 3 (RGB) or 4 (RGBA)",
                self.channels
            ));
        }
        if self.height == 0 || self.width == 0 {
            return Err(format!(
                "an image of {}x{} pixels is empty",
                self.height, self.width
            ));
        }
        if self.checked_len().is_none() {
            return Err(self.overflow());
        }
        Ok(())
    }

    fn overflow(&self) -> String {
        format!(
            "an image of {} x {} x {} values (channels x height x width): the declared size overflows",
            self.channels, self.height, self.width
        )
    }
}

fn mode_name(color: ColorType) -> &'static str {
    match color {
        ColorType::Grayscale => "grey",
        ColorType::GrayscaleAlpha => "grey with alpha",
        ColorType::Rgb => "RGB",
        ColorType::Rgba => "RGBA",
        ColorType::Indexed => "palette",
    }
}

/// Reads the PNG at `path` into `out` (`shape.len()` values, channels
/// first, each byte / 255). An RGB domain accepts RGB and RGBA files (the
/// alpha channel is dropped, as PIL's `convert("RGB")` does), a grey one
/// grey files (with or without alpha), an RGBA one RGBA files; palette and
/// low-bit-depth files are expanded first.
///
/// # Errors
/// An unreadable or malformed PNG, a 16-bit one, a size other than
/// `shape`'s, or a colour type the shape does not accept.
pub fn read_png(path: &Path, shape: ImageShape, out: &mut [f32]) -> Result<()> {
    let (file, len) = open_regular(path)?;
    if len > MAX_PNG_BYTES {
        return Err(FormatError::new(
            path,
            format!("is {len} bytes, over the {MAX_PNG_BYTES} allowed for one image"),
        ));
    }
    let Some(values) = shape.checked_len() else {
        return Err(FormatError::new(path, shape.overflow()));
    };
    if out.len() != values {
        return Err(FormatError::new(
            path,
            format!("output holds {} values, the image {values}", out.len()),
        ));
    }
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(Transformations::EXPAND);
    let bad = |e: png::DecodingError| {
        FormatError::new(
            path,
            format!("is not a readable PNG: {}", excerpt(&e.to_string())),
        )
    };
    let mut reader = decoder.read_info().map_err(bad)?;
    let (width, height) = {
        let info = reader.info();
        (info.width as usize, info.height as usize)
    };
    if (height, width) != (shape.height, shape.width) {
        return Err(FormatError::new(
            path,
            format!(
                "is {height}x{width} pixels (height x width), the domain declares {}x{}",
                shape.height, shape.width
            ),
        ));
    }
    let (color, depth) = reader.output_color_type();
    if depth != BitDepth::Eight {
        return Err(FormatError::new(
            path,
            format!("has {depth:?}-bit channels; only 8-bit images are read"),
        ));
    }
    let file_channels = color.samples();
    let accepted = match shape.channels {
        1 => matches!(color, ColorType::Grayscale | ColorType::GrayscaleAlpha),
        3 => matches!(color, ColorType::Rgb | ColorType::Rgba),
        _ => color == ColorType::Rgba,
    };
    if !accepted {
        let want = match shape.channels {
            1 => "grey",
            3 => "RGB (or RGBA)",
            _ => "RGBA",
        };
        return Err(FormatError::new(
            path,
            format!(
                "is a {} image, the domain expects {want} ({} channels)",
                mode_name(color),
                shape.channels
            ),
        ));
    }
    // The size matches the checked shape, so these products fit.
    let plane = height.saturating_mul(width);
    let Some(size) = reader
        .output_buffer_size()
        .or_else(|| plane.checked_mul(file_channels))
    else {
        return Err(FormatError::new(
            path,
            format!("is {height}x{width} pixels of {file_channels} channels: the size overflows"),
        ));
    };
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(bad)?;
    let bytes = &buf[..frame.buffer_size()];
    for (p, pixel) in bytes.chunks_exact(file_channels).take(plane).enumerate() {
        for c in 0..shape.channels {
            out[c * plane + p] = f32::from(pixel[c]) / 255.0;
        }
    }
    Ok(())
}

/// A split of images: files `0.png`, `1.png`, ... `{n-1}.png` in one folder.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    dir: PathBuf,
    count: usize,
    shape: ImageShape,
}

impl ImageFolder {
    /// Opens the folder `dir` of `{index}.png` files, all of `shape`. The
    /// indices must run from 0 without a gap; files are read when loaded.
    ///
    /// # Errors
    /// A missing folder, a folder without images, a gap in the indices, or
    /// a bad shape.
    pub fn open(dir: &Path, shape: ImageShape) -> Result<Self> {
        shape.check().map_err(|e| FormatError::new(dir, e))?;
        let entries = std::fs::read_dir(dir).map_err(|e| {
            FormatError::new(
                dir,
                format!("cannot list the image folder: {}", io_text(&e)),
            )
        })?;
        let mut indices = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| {
                FormatError::new(
                    dir,
                    format!("cannot list the image folder: {}", io_text(&e)),
                )
            })?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".png")) else {
                continue;
            };
            if let Ok(i) = stem.parse::<usize>()
                && stem == i.to_string()
            {
                indices.push(i);
            }
        }
        if indices.is_empty() {
            return Err(FormatError::new(
                dir,
                "holds no `{index}.png` image (expected 0.png, 1.png, ...)",
            ));
        }
        indices.sort_unstable();
        if let Some(gap) = indices.iter().enumerate().find(|&(k, &i)| k != i) {
            return Err(FormatError::new(
                dir,
                format!(
                    "has {} images but no {}.png: images must be numbered 0..{} without a gap",
                    indices.len(),
                    gap.0,
                    indices.len()
                ),
            ));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            count: indices.len(),
            shape,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the folder has no image.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The shape every image has.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of image `index`.
    pub fn file(&self, index: u64) -> PathBuf {
        self.dir.join(format!("{index}.png"))
    }

    /// Reads images `indices` into `out`, image after image.
    ///
    /// # Errors
    /// An index past the last image, or an image [`read_png`] refuses.
    pub fn read(&self, indices: &[u64], out: &mut [f32]) -> Result<()> {
        let n = self.shape.len();
        let want = indices.len().checked_mul(n);
        if want != Some(out.len()) {
            return Err(FormatError::new(
                &self.dir,
                format!(
                    "output holds {} values, {} images need {}",
                    out.len(),
                    indices.len(),
                    size_text(want)
                ),
            ));
        }
        for (o, &i) in out.chunks_exact_mut(n).zip(indices) {
            if i >= self.count as u64 {
                return Err(FormatError::new(
                    &self.dir,
                    format!(
                        "image {i} is past the end: the folder has {} images",
                        self.count
                    ),
                ));
            }
            read_png(&self.file(i), self.shape, o)?;
        }
        Ok(())
    }
}

/// Encodes an 8-bit RGB image (`rgb.len() == 3 * width * height`, rows top
/// to bottom, pixels interleaved) as PNG bytes.
///
/// # Errors
/// A buffer of the wrong length, or an encoder failure.
pub fn encode_png_rgb(width: u32, height: u32, rgb: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let want = product(&[3, width as usize, height as usize]);
    if want != Some(rgb.len()) {
        return Err(format!(
            "an RGB image of {width}x{height} needs {} bytes, got {}",
            size_text(want),
            rgb.len()
        ));
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(ColorType::Rgb);
        encoder.set_depth(BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(rgb).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, w: u32, h: u32, color: ColorType, data: &[u8]) {
        let file = std::fs::File::create(path).unwrap();
        let mut e = png::Encoder::new(file, w, h);
        e.set_color(color);
        e.set_depth(BitDepth::Eight);
        e.write_header().unwrap().write_image_data(data).unwrap();
    }

    const RGB: ImageShape = ImageShape {
        channels: 3,
        height: 2,
        width: 3,
    };

    #[test]
    fn rgb_and_rgba_files_read_channels_first() {
        let dir = tempfile::tempdir().unwrap();
        let rgb: Vec<u8> = (0..18).map(|v| v * 10).collect();
        write_png(&dir.path().join("0.png"), 3, 2, ColorType::Rgb, &rgb);
        let rgba: Vec<u8> = rgb
            .chunks(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect();
        write_png(&dir.path().join("1.png"), 3, 2, ColorType::Rgba, &rgba);
        let folder = ImageFolder::open(dir.path(), RGB).unwrap();
        assert_eq!(folder.len(), 2);
        let mut out = vec![0.0; 12 * 3];
        folder.read(&[0, 1], &mut out).unwrap();
        // Red plane of image 0: pixels 0..6 -> bytes 0, 30, 60, ...
        let red: Vec<f32> = (0..6).map(|p| (p * 30) as f32 / 255.0).collect();
        assert_eq!(&out[..6], &red[..]);
        assert_eq!(&out[..18], &out[18..]);
        assert!(
            folder
                .read(&[2], &mut out[..18])
                .unwrap_err()
                .to_string()
                .contains("image 2 is past the end")
        );
    }

    #[test]
    fn wrong_size_mode_and_gaps_are_named() {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("0.png"), 3, 3, ColorType::Rgb, &[0; 27]);
        let mut out = vec![0.0; RGB.len()];
        let e = read_png(&dir.path().join("0.png"), RGB, &mut out)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("0.png: is 3x3 pixels (height x width), the domain declares 2x3"),
            "{e}"
        );
        write_png(
            &dir.path().join("0.png"),
            3,
            2,
            ColorType::Grayscale,
            &[0; 6],
        );
        let e = read_png(&dir.path().join("0.png"), RGB, &mut out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a grey image, the domain expects RGB"), "{e}");
        write_png(&dir.path().join("2.png"), 3, 2, ColorType::Rgb, &[0; 18]);
        let e = ImageFolder::open(dir.path(), RGB).unwrap_err().to_string();
        assert!(e.contains("has 2 images but no 1.png"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(
            ImageFolder::open(empty.path(), RGB)
                .unwrap_err()
                .to_string()
                .contains("holds no")
        );
        std::fs::write(dir.path().join("1.png"), b"not a png").unwrap();
        let e = read_png(&dir.path().join("1.png"), RGB, &mut out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1.png: is not a readable PNG"), "{e}");
    }

    #[test]
    fn declared_sizes_that_overflow_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("0.png"), 3, 2, ColorType::Rgb, &[0; 18]);
        // 1 x (2^32 + 1) x 2^32 wraps to 2^32 values unchecked.
        let huge = ImageShape {
            channels: 1,
            height: (1 << 32) + 1,
            width: 1 << 32,
        };
        assert_eq!(huge.checked_len(), None);
        let e = ImageFolder::open(dir.path(), huge).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "an image of 1 x 4294967297 x 4294967296 values (channels x height x width): the declared size overflows"
            ),
            "{e}"
        );
        let mut out = vec![0.0; 1 << 12];
        let e = read_png(&dir.path().join("0.png"), huge, &mut out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("0.png: an image of 1 x 4294967297"), "{e}");
        // Values that fit, but whose f32 bytes do not.
        let wide = ImageShape {
            channels: 4,
            height: 1 << 31,
            width: 1 << 31,
        };
        assert!(wide.check().unwrap_err().contains("overflows"));
        // Many images of a valid shape.
        let folder = ImageFolder::open(dir.path(), RGB).unwrap();
        let many = vec![0u64; 1 << 20];
        let mut small = [0.0; 18];
        let e = folder.read(&many, &mut small).unwrap_err().to_string();
        assert!(e.contains("1048576 images need 18874368"), "{e}");
        let e = encode_png_rgb(u32::MAX, u32::MAX, &[]).unwrap_err();
        assert!(
            e.contains("needs more than 2^64 (the size overflows) bytes"),
            "{e}"
        );
    }

    #[test]
    fn encoded_png_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let rgb: Vec<u8> = (0..18).collect();
        let bytes = encode_png_rgb(3, 2, &rgb).unwrap();
        std::fs::write(dir.path().join("0.png"), bytes).unwrap();
        let mut out = vec![0.0; 18];
        read_png(&dir.path().join("0.png"), RGB, &mut out).unwrap();
        assert_eq!(out[1], 3.0 / 255.0);
        assert_eq!(out[6], 1.0 / 255.0);
        assert!(encode_png_rgb(3, 2, &rgb[..5]).is_err());
    }
}
