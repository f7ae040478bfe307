//! Plain Rust values shared by plugins and the host: splits, domain facts and
//! loss specs. They convert to and from the `#[repr(C)]` forms of [`crate::abi`].

use crate::abi;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which part of a domain's data to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training items.
    Train,
    /// Validation items.
    Val,
    /// Test items.
    Test,
}

impl Split {
    /// All splits, in ABI code order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// The ABI code of this split.
    pub fn code(self) -> u32 {
        match self {
            Split::Train => abi::SPLIT_TRAIN,
            Split::Val => abi::SPLIT_VAL,
            Split::Test => abi::SPLIT_TEST,
        }
    }

    /// The split with this ABI code, if any.
    pub fn from_code(code: u32) -> Option<Split> {
        Split::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Lower-case name (`train`, `val`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Number of items in each split of a domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSizes {
    /// Training items.
    pub train: u64,
    /// Validation items.
    pub val: u64,
    /// Test items.
    pub test: u64,
}

impl SplitSizes {
    /// Size of one split.
    pub fn get(&self, split: Split) -> u64 {
        match split {
            Split::Train => self.train,
            Split::Val => self.val,
            Split::Test => self.test,
        }
    }
}

/// What a domain tells the host about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainInfo {
    /// Length of one item's latent vector (what the GW encodes).
    pub latent_dim: usize,
    /// Number of `f32` elements in one raw item.
    pub item_len: usize,
    /// Items per split.
    pub split_sizes: SplitSizes,
    /// Whether the plugin has its own `encode` (otherwise latents = raw
    /// items). Plugins may leave it `false`: the export macro sets it when
    /// the domain implements [`Domain::encode`](crate::Domain::encode).
    pub has_encode: bool,
    /// Whether the plugin has its own `decode` (otherwise raw items =
    /// latents); set by the export macro as `has_encode` is.
    pub has_decode: bool,
}

impl DomainInfo {
    /// The C form.
    pub fn to_c(&self) -> abi::DomainInfoC {
        let mut flags = 0;
        if self.has_encode {
            flags |= abi::DOMAIN_HAS_ENCODE;
        }
        if self.has_decode {
            flags |= abi::DOMAIN_HAS_DECODE;
        }
        abi::DomainInfoC {
            latent_dim: self.latent_dim as u64,
            item_len: self.item_len as u64,
            item_dtype: abi::ITEM_DTYPE_F32,
            flags,
            split_sizes: [
                self.split_sizes.train,
                self.split_sizes.val,
                self.split_sizes.test,
            ],
            render_width: 0,
            render_height: 0,
            reserved: [0; 2],
        }
    }

    /// Reads the C form back; fails on an item dtype this ABI does not know.
    pub fn from_c(c: &abi::DomainInfoC) -> Result<Self, String> {
        if c.item_dtype != abi::ITEM_DTYPE_F32 {
            return Err(format!(
                "item dtype code {} is not supported (ABI v{} knows only f32 = {})",
                c.item_dtype,
                abi::ABI_VERSION,
                abi::ITEM_DTYPE_F32
            ));
        }
        Ok(Self {
            latent_dim: c.latent_dim as usize,
            item_len: c.item_len as usize,
            split_sizes: SplitSizes {
                train: c.split_sizes[0],
                val: c.split_sizes[1],
                test: c.split_sizes[2],
            },
            has_encode: c.flags & abi::DOMAIN_HAS_ENCODE != 0,
            has_decode: c.flags & abi::DOMAIN_HAS_DECODE != 0,
        })
    }
}

/// The elementary loss applied to one latent segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Mean squared error over every element of the segment.
    Mse,
    /// Cross-entropy of the predicted logits against the target's argmax class.
    CrossEntropy,
    /// Binary cross-entropy of predicted logits against targets in [0, 1].
    Bce,
    /// `1 - cosine_similarity(pred, target)`, averaged over items.
    Cosine,
    /// Mean absolute error over every element of the segment.
    L1,
}

impl LossKind {
    /// All kinds, in ABI code order.
    pub const ALL: [LossKind; 5] = [
        LossKind::Mse,
        LossKind::CrossEntropy,
        LossKind::Bce,
        LossKind::Cosine,
        LossKind::L1,
    ];

    /// The ABI code.
    pub fn code(self) -> u32 {
        match self {
            LossKind::Mse => abi::LOSS_MSE,
            LossKind::CrossEntropy => abi::LOSS_CROSS_ENTROPY,
            LossKind::Bce => abi::LOSS_BCE,
            LossKind::Cosine => abi::LOSS_COSINE,
            LossKind::L1 => abi::LOSS_L1,
        }
    }

    /// The kind with this ABI code, if any.
    pub fn from_code(code: u32) -> Option<LossKind> {
        LossKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// snake_case name, as in YAML and `plugins inspect`.
    pub fn name(self) -> &'static str {
        match self {
            LossKind::Mse => "mse",
            LossKind::CrossEntropy => "cross_entropy",
            LossKind::Bce => "bce",
            LossKind::Cosine => "cosine",
            LossKind::L1 => "l1",
        }
    }
}

/// The GW loss families a domain loss is used in (shimmer's
/// `compute_dcy_loss`, `compute_cy_loss`, `compute_tr_loss`, `compute_fused_loss`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossUse {
    /// Demi-cycle: encode, fuse, decode back to the same domain.
    DemiCycle,
    /// Full cycle through another domain.
    Cycle,
    /// Translation from other domains.
    Translation,
    /// Decoding of a fusion of several domains (broadcast loss).
    Fused,
}

impl LossUse {
    /// All uses, in the order of [`LossWeights`] and the ABI `weights` array.
    pub const ALL: [LossUse; 4] = [
        LossUse::DemiCycle,
        LossUse::Cycle,
        LossUse::Translation,
        LossUse::Fused,
    ];

    fn bit(self) -> u32 {
        match self {
            LossUse::DemiCycle => abi::USE_DEMI_CYCLE,
            LossUse::Cycle => abi::USE_CYCLE,
            LossUse::Translation => abi::USE_TRANSLATION,
            LossUse::Fused => abi::USE_FUSED,
        }
    }

    fn index(self) -> usize {
        match self {
            LossUse::DemiCycle => 0,
            LossUse::Cycle => 1,
            LossUse::Translation => 2,
            LossUse::Fused => 3,
        }
    }
}

/// Weight of a segment in each loss use; `None` leaves the segment out of
/// that use. A use with no segment at all is disabled for the domain (as a
/// shimmer `compute_*_loss` that returns `None`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossWeights {
    /// Weight in demi-cycle losses.
    pub demi_cycle: Option<f32>,
    /// Weight in cycle losses.
    pub cycle: Option<f32>,
    /// Weight in translation losses.
    pub translation: Option<f32>,
    /// Weight in fused losses.
    pub fused: Option<f32>,
}

impl LossWeights {
    /// The same weight in every use.
    pub fn all(weight: f32) -> Self {
        Self {
            demi_cycle: Some(weight),
            cycle: Some(weight),
            translation: Some(weight),
            fused: Some(weight),
        }
    }

    /// The weight for one use.
    pub fn get(&self, use_: LossUse) -> Option<f32> {
        match use_ {
            LossUse::DemiCycle => self.demi_cycle,
            LossUse::Cycle => self.cycle,
            LossUse::Translation => self.translation,
            LossUse::Fused => self.fused,
        }
    }
}

/// A loss over the columns `start..start + len` of a domain's latent vector.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossSegment {
    /// First latent column.
    pub start: usize,
    /// Number of columns.
    pub len: usize,
    /// Elementary loss.
    pub kind: LossKind,
    /// Weight per use.
    pub weights: LossWeights,
}

impl LossSegment {
    /// The C form.
    pub fn to_c(&self) -> abi::LossSegmentC {
        let mut uses = 0;
        let mut weights = [0.0; 4];
        for u in LossUse::ALL {
            if let Some(w) = self.weights.get(u) {
                uses |= u.bit();
                weights[u.index()] = w;
            }
        }
        abi::LossSegmentC {
            start: self.start as u64,
            len: self.len as u64,
            kind: self.kind.code(),
            uses,
            weights,
        }
    }

    /// Reads the C form back; fails on an unknown loss kind.
    pub fn from_c(c: &abi::LossSegmentC) -> Result<Self, String> {
        let kind = LossKind::from_code(c.kind)
            .ok_or_else(|| format!("unknown loss kind code {}", c.kind))?;
        let pick = |u: LossUse| (c.uses & u.bit() != 0).then_some(c.weights[u.index()]);
        Ok(Self {
            start: c.start as usize,
            len: c.len as usize,
            kind,
            weights: LossWeights {
                demi_cycle: pick(LossUse::DemiCycle),
                cycle: pick(LossUse::Cycle),
                translation: pick(LossUse::Translation),
                fused: pick(LossUse::Fused),
            },
        })
    }
}

/// How the host computes a domain's loss between a prediction and a target
/// latent: the weighted sum of its segments' losses for the use at hand.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossSpec {
    /// The segments, in order.
    pub segments: Vec<LossSegment>,
}

impl LossSpec {
    /// MSE over the whole latent vector, weight 1 in every use (shimmer's
    /// default domain loss).
    pub fn mse(latent_dim: usize) -> Self {
        Self {
            segments: vec![LossSegment {
                start: 0,
                len: latent_dim,
                kind: LossKind::Mse,
                weights: LossWeights::all(1.0),
            }],
        }
    }

    /// Whether any segment is used for `use_` (otherwise that loss is skipped).
    pub fn is_enabled(&self, use_: LossUse) -> bool {
        self.segments.iter().any(|s| s.weights.get(use_).is_some())
    }

    /// Checks that every segment is non-empty, lies within the latent vector,
    /// and has finite weights.
    pub fn validate(&self, latent_dim: usize) -> Result<(), String> {
        for (i, s) in self.segments.iter().enumerate() {
            if s.len == 0 {
                return Err(format!("loss segment {i} is empty"));
            }
            if s.start
                .checked_add(s.len)
                .is_none_or(|end| end > latent_dim)
            {
                return Err(format!(
                    "loss segment {i} covers columns {}..{} but the latent has {latent_dim}",
                    s.start,
                    s.start.saturating_add(s.len)
                ));
            }
            for u in LossUse::ALL {
                if let Some(w) = s.weights.get(u)
                    && !w.is_finite()
                {
                    return Err(format!("loss segment {i} has a non-finite weight {w}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_segment_c_round_trip_keeps_disabled_uses() {
        let seg = LossSegment {
            start: 2,
            len: 3,
            kind: LossKind::CrossEntropy,
            weights: LossWeights {
                demi_cycle: Some(0.5),
                cycle: None,
                translation: Some(2.0),
                fused: None,
            },
        };
        assert_eq!(LossSegment::from_c(&seg.to_c()), Ok(seg));
    }

    #[test]
    fn unknown_codes_are_rejected() {
        let mut c = LossSpec::mse(4).segments[0].to_c();
        c.kind = 99;
        assert!(LossSegment::from_c(&c).unwrap_err().contains("99"));
        let mut info = DomainInfo {
            latent_dim: 4,
            item_len: 4,
            split_sizes: SplitSizes::default(),
            has_encode: false,
            has_decode: false,
        }
        .to_c();
        info.item_dtype = 7;
        assert!(DomainInfo::from_c(&info).is_err());
    }

    #[test]
    fn validate_catches_out_of_range_segments() {
        assert!(LossSpec::mse(4).validate(4).is_ok());
        assert!(LossSpec::mse(5).validate(4).is_err());
        let mut spec = LossSpec::mse(4);
        spec.segments[0].len = 0;
        assert!(spec.validate(4).is_err());
    }

    #[test]
    fn disabled_use_is_reported() {
        let mut spec = LossSpec::mse(4);
        spec.segments[0].weights.cycle = None;
        assert!(!spec.is_enabled(LossUse::Cycle));
        assert!(spec.is_enabled(LossUse::DemiCycle));
    }

    #[test]
    fn split_codes_round_trip() {
        for s in Split::ALL {
            assert_eq!(Split::from_code(s.code()), Some(s));
        }
        assert_eq!(Split::from_code(3), None);
    }
}
