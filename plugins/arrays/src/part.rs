//! One part of an item, opened: its source in each split (an array read in
//! place, or a folder of images), the columns taken, and the transforms.

use crate::config::{PartConfig, PartLoss, PathSpec, Stat};
use shimmer_formats::npy::open_npy;
use shimmer_formats::safetensors_file::open_safetensors;
use shimmer_formats::{FormatError, ImageFolder, ImageShape, NumArray};
use shimmer_plugin_api::{PluginError, Split};
use std::path::{Path, PathBuf};

/// Where a part's values come from in one split.
#[derive(Debug)]
enum Source {
    /// A `.npy` array or a `.safetensors` tensor, read in place.
    Array(NumArray),
    /// A folder of `{index}.png` images.
    Images(ImageFolder),
}

impl Source {
    fn rows(&self) -> usize {
        match self {
            Source::Array(a) => a.rows(),
            Source::Images(f) => f.len(),
        }
    }

    fn width(&self) -> usize {
        match self {
            Source::Array(a) => a.row_len(),
            Source::Images(f) => f.shape().len(),
        }
    }

    fn path(&self) -> &Path {
        match self {
            Source::Array(a) => a.path(),
            Source::Images(f) => f.dir(),
        }
    }

    fn read(
        &self,
        indices: &[u64],
        columns: Option<&[usize]>,
        out: &mut [f32],
    ) -> Result<(), FormatError> {
        match self {
            Source::Array(a) => a.read_rows(indices, columns, out),
            Source::Images(f) => f.read(indices, out),
        }
    }

    /// The file holding item `index` (the image itself for a folder).
    fn item_file(&self, index: u64) -> PathBuf {
        match self {
            Source::Array(a) => a.path().to_path_buf(),
            Source::Images(f) => f.file(index),
        }
    }
}

/// What a part turns its (normalised) values into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expand {
    /// The values themselves.
    None,
    /// An integer class in `0..n` to `n` values, 1 at the class.
    OneHot(usize),
    /// Each angle to its cosine and sine.
    CosSin,
}

/// A part of an item, ready to load.
#[derive(Debug)]
pub(crate) struct Part {
    /// `part N (source)`, for messages.
    label: String,
    sources: [Option<Source>; 3],
    columns: Option<Vec<usize>>,
    /// Values read per item (after `columns`).
    in_width: usize,
    mean: Option<Vec<f32>>,
    std: Option<Vec<f32>>,
    scale: Option<Vec<f32>>,
    shift: Option<Vec<f32>>,
    expand: Expand,
    /// Values this part adds to an item.
    pub(crate) out_width: usize,
    /// The loss of the part's values and its weight.
    pub(crate) loss: (PartLoss, f32),
}

fn err(text: impl Into<String>) -> PluginError {
    PluginError::new(text)
}

fn format_err(e: FormatError) -> PluginError {
    PluginError::new(e.to_string())
}

impl Part {
    /// Opens part `number` (from 1) of a domain: its file in every split of
    /// `splits`, paths taken from `root`.
    pub(crate) fn open(
        number: usize,
        c: &PartConfig,
        root: &Path,
        splits: &[Split],
    ) -> Result<Self, PluginError> {
        let sources: Vec<(&str, &PathSpec)> = [
            ("npy", &c.npy),
            ("safetensors", &c.safetensors),
            ("images", &c.images),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
        let (kind, spec) = match sources.as_slice() {
            [one] => *one,
            [] => {
                return Err(err(format!(
                    "part {number}: say where its values come from with `npy`, `safetensors` or `images`"
                )));
            }
            many => {
                let keys: Vec<&str> = many.iter().map(|(k, _)| *k).collect();
                return Err(err(format!(
                    "part {number}: give one source, not {}",
                    keys.join(" and ")
                )));
            }
        };
        if c.tensor.is_some() && kind != "safetensors" {
            return Err(err(format!(
                "part {number}: `tensor` goes with `safetensors`"
            )));
        }
        if c.shape.is_some() && kind != "images" {
            return Err(err(format!("part {number}: `shape` goes with `images`")));
        }
        let label = match spec {
            PathSpec::Template(t) => format!("part {number} ({kind} `{t}`)"),
            PathSpec::PerSplit(_) => format!("part {number} ({kind})"),
        };
        let mut opened: [Option<Source>; 3] = [None, None, None];
        for &split in splits {
            let Some(rel) = spec.for_split(split) else {
                continue;
            };
            let path = root.join(&rel);
            let source = match kind {
                "npy" => Source::Array(open_npy(&path).map_err(format_err)?),
                "safetensors" => {
                    let Some(name) = &c.tensor else {
                        return Err(err(format!(
                            "{label}: name the tensor to read with `tensor:`"
                        )));
                    };
                    Source::Array(
                        open_safetensors(&path, &name.replace("{split}", split.name()))
                            .map_err(format_err)?,
                    )
                }
                _ => {
                    let Some([channels, height, width]) = c.shape else {
                        return Err(err(format!(
                            "{label}: give the images' `shape: [channels, height, width]`"
                        )));
                    };
                    let shape = ImageShape {
                        channels,
                        height,
                        width,
                    };
                    Source::Images(ImageFolder::open(&path, shape).map_err(format_err)?)
                }
            };
            opened[split.code() as usize] = Some(source);
        }
        let present: Vec<&Source> = opened.iter().flatten().collect();
        let Some(first) = present.first() else {
            return Err(err(format!(
                "{label}: no split has a file (check `splits` and the paths)"
            )));
        };
        let full_width = first.width();
        if let Some(other) = present.iter().find(|s| s.width() != full_width) {
            return Err(err(format!(
                "{label}: items of {} have {} values, items of {} have {full_width}: every split's file must have the same item shape",
                other.path().display(),
                other.width(),
                first.path().display()
            )));
        }
        if let Some(cols) = &c.columns {
            if kind == "images" {
                return Err(err(format!(
                    "{label}: `columns` selects values of arrays, not images"
                )));
            }
            if cols.is_empty() {
                return Err(err(format!("{label}: `columns` is empty")));
            }
            if let Some(bad) = cols.iter().find(|&&k| k >= full_width) {
                return Err(err(format!(
                    "{label}: column {bad} does not exist: items of {} have {full_width} values (columns 0..{full_width})",
                    first.path().display()
                )));
            }
        }
        let in_width = c.columns.as_ref().map_or(full_width, Vec::len);
        let stat = |name: &str, s: &Option<Stat>| -> Result<Option<Vec<f32>>, PluginError> {
            s.as_ref()
                .map(|s| resolve_stat(&label, name, s, in_width, root))
                .transpose()
        };
        let std = stat("std", &c.std)?;
        if let Some(k) = std.as_ref().and_then(|s| s.iter().position(|&v| v == 0.0)) {
            return Err(err(format!(
                "{label}: `std` is 0 for column {k}: cannot divide by it"
            )));
        }
        let expand = match (c.one_hot, c.cos_sin) {
            (Some(_), true) => {
                return Err(err(format!(
                    "{label}: `one_hot` and `cos_sin` exclude each other"
                )));
            }
            (Some(n), false) => {
                if in_width != 1 {
                    return Err(err(format!(
                        "{label}: `one_hot` needs exactly one column (the class), not {in_width}: select it with `columns: [k]`"
                    )));
                }
                if n == 0 {
                    return Err(err(format!("{label}: `one_hot` needs at least one class")));
                }
                Expand::OneHot(n)
            }
            (None, true) => Expand::CosSin,
            (None, false) => Expand::None,
        };
        let out_width = match expand {
            Expand::None => in_width,
            Expand::OneHot(n) => n,
            Expand::CosSin => 2 * in_width,
        };
        if !(c.weight.is_finite() && c.weight >= 0.0) {
            return Err(err(format!(
                "{label}: `weight` must be a finite number >= 0, not {}",
                c.weight
            )));
        }
        let (mean, scale, shift) = (
            stat("mean", &c.mean)?,
            stat("scale", &c.scale)?,
            stat("shift", &c.shift)?,
        );
        let part = Self {
            label,
            mean,
            std,
            scale,
            shift,
            sources: opened,
            columns: c.columns.clone(),
            in_width,
            expand,
            out_width,
            loss: (c.loss, c.weight),
        };
        part.check_range()?;
        Ok(part)
    }

    /// Refuses transforms that take a value of the data out of `f32`
    /// (`std: 1e-45`, `scale: 3e38`): each step of `(x - mean) / std *
    /// scale + shift` is monotonic, so the smallest and largest finite
    /// value of each column (of every split; images lie in [0, 1]) bound
    /// what training will see. Reads the arrays once.
    fn check_range(&self) -> Result<(), PluginError> {
        if self.is_plain() {
            return Ok(());
        }
        let w = self.in_width;
        let (mut lo, mut hi) = (vec![f32::INFINITY; w], vec![f32::NEG_INFINITY; w]);
        for source in self.sources.iter().flatten() {
            let Source::Array(_) = source else {
                lo.iter_mut().for_each(|v| *v = v.min(0.0));
                hi.iter_mut().for_each(|v| *v = v.max(1.0));
                continue;
            };
            let rows = source.rows() as u64;
            let mut buf = vec![0.0f32; 4096 * w];
            for start in (0..rows).step_by(4096) {
                let indices: Vec<u64> = (start..rows.min(start + 4096)).collect();
                let buf = &mut buf[..indices.len() * w];
                source
                    .read(&indices, self.columns.as_deref(), buf)
                    .map_err(format_err)?;
                for row in buf.chunks_exact(w) {
                    for (k, &x) in row.iter().enumerate().filter(|(_, x)| x.is_finite()) {
                        (lo[k], hi[k]) = (lo[k].min(x), hi[k].max(x));
                    }
                }
            }
        }
        for (k, (&a, &b)) in lo
            .iter()
            .zip(&hi)
            .enumerate()
            .filter(|(_, (a, _))| a.is_finite())
        {
            let (mut low, mut high) = (vec![0.0; w], vec![0.0; w]);
            (low[k], high[k]) = (a, b);
            self.normalise(&mut low);
            self.normalise(&mut high);
            if let Some(y) = [low[k], high[k]].into_iter().find(|y| !y.is_finite()) {
                return Err(err(format!(
                    "{}: `mean`, `std`, `scale` and `shift` take column {k}'s values (from {a} \
                     to {b}) to {y}: outside f32, which ends at ±{:e}; choose ones that keep \
                     them finite",
                    self.label,
                    f32::MAX
                )));
            }
        }
        Ok(())
    }

    /// Items in `split` (0 when the part has no file for it).
    pub(crate) fn split_size(&self, split: Split) -> u64 {
        self.sources[split.code() as usize]
            .as_ref()
            .map_or(0, |s| s.rows() as u64)
    }

    /// The part's name in messages.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// Whether the part's values are the file's values, unchanged.
    pub(crate) fn is_plain(&self) -> bool {
        self.columns.is_none()
            && self.mean.is_none()
            && self.std.is_none()
            && self.scale.is_none()
            && self.shift.is_none()
            && self.expand == Expand::None
    }

    /// Reads the part's values of `indices` of `split` into `out`, item
    /// after item, `out_width` values each, refusing non-finite values
    /// unless `allow_non_finite`.
    pub(crate) fn load(
        &self,
        split: Split,
        indices: &[u64],
        allow_non_finite: bool,
        out: &mut [f32],
    ) -> Result<(), PluginError> {
        let Some(source) = &self.sources[split.code() as usize] else {
            return Err(err(format!(
                "{}: the domain has no {split} split",
                self.label
            )));
        };
        if self.is_plain() {
            source.read(indices, None, out).map_err(format_err)?;
            return self.check_finite(source, split, indices, out, allow_non_finite);
        }
        let mut raw = vec![0.0f32; indices.len() * self.in_width];
        source
            .read(indices, self.columns.as_deref(), &mut raw)
            .map_err(format_err)?;
        self.check_finite(source, split, indices, &raw, allow_non_finite)?;
        for (row, (r, o)) in raw
            .chunks_exact_mut(self.in_width)
            .zip(out.chunks_exact_mut(self.out_width))
            .enumerate()
        {
            self.normalise(r);
            match self.expand {
                Expand::None => o.copy_from_slice(r),
                Expand::CosSin => {
                    for (pair, &angle) in o.chunks_exact_mut(2).zip(r.iter()) {
                        pair[0] = angle.cos();
                        pair[1] = angle.sin();
                    }
                }
                Expand::OneHot(n) => {
                    let v = r[0];
                    if !(v.fract() == 0.0 && v >= 0.0 && (v as usize) < n) {
                        let index = indices[row];
                        return Err(err(format!(
                            "{}: item {index} ({split}): class value {v} is not an integer in 0..{n} (`one_hot: {n}`)",
                            source.item_file(index).display()
                        )));
                    }
                    o.fill(0.0);
                    o[v as usize] = 1.0;
                }
            }
        }
        Ok(())
    }

    /// `(x - mean) / std * scale + shift`, each step when configured.
    fn normalise(&self, row: &mut [f32]) {
        let apply = |row: &mut [f32], stat: &Option<Vec<f32>>, f: fn(f32, f32) -> f32| {
            if let Some(s) = stat {
                if s.len() == 1 {
                    row.iter_mut().for_each(|x| *x = f(*x, s[0]));
                } else {
                    row.iter_mut().zip(s).for_each(|(x, &v)| *x = f(*x, v));
                }
            }
        };
        apply(row, &self.mean, |x, m| x - m);
        apply(row, &self.std, |x, s| x / s);
        apply(row, &self.scale, |x, s| x * s);
        apply(row, &self.shift, |x, s| x + s);
    }

    fn check_finite(
        &self,
        source: &Source,
        split: Split,
        indices: &[u64],
        values: &[f32],
        allow: bool,
    ) -> Result<(), PluginError> {
        if allow {
            return Ok(());
        }
        let width = values.len() / indices.len().max(1);
        match values.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(at) => {
                let index = indices[at / width.max(1)];
                Err(err(format!(
                    "{}: item {index} ({split}), value {}: {} in the data (set `allow_non_finite: true` in the domain's config to accept it)",
                    source.item_file(index).display(),
                    at % width.max(1),
                    values[at]
                )))
            }
        }
    }
}

/// A statistic as one value or one per column.
fn resolve_stat(
    label: &str,
    name: &str,
    stat: &Stat,
    width: usize,
    root: &Path,
) -> Result<Vec<f32>, PluginError> {
    let values: Vec<f32> = match stat {
        Stat::Number(v) => vec![*v as f32],
        Stat::List(v) => v.iter().map(|&x| x as f32).collect(),
        Stat::File(path) => open_npy(&root.join(path))
            .and_then(|a| a.to_f32_vec())
            .map_err(|e| err(format!("{label}: `{name}`: {e}")))?,
    };
    if values.len() != 1 && values.len() != width {
        return Err(err(format!(
            "{label}: `{name}` has {} values, but the part's items have {width} (give one, or one per column)",
            values.len()
        )));
    }
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(err(format!(
            "{label}: `{name}` holds {bad}, not a finite number"
        )));
    }
    Ok(values)
}
