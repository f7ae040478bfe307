//! What the loader hands to the trainer: `group -> domain -> [batch,
//! latent_dim]` latents in plain host memory ([`HostBatch`]), and their
//! conversion to candle tensors on the training device.
//!
//! ```
//! use candle_core::Device;
//! use shimmer_data::{DomainBatch, GroupBatch, HostBatch};
//!
//! let a = DomainBatch::new(vec![1.0, 2.0, 3.0, 4.0], 2, 2);
//! let mut batch = HostBatch::new(0, 0, 0);
//! batch.groups.insert("a".into(), GroupBatch::new(vec![0, 1].into(), [("a".into(), a)].into()));
//! let t = batch.to_tensors(&Device::Cpu).unwrap();
//! assert_eq!(t["a"]["a"].dims(), [2, 2]);
//! ```

use candle_core::{Device, Tensor};
use indexmap::IndexMap;
use shimmer_nn::{Batch as GwBatch, GroupKey};
use std::collections::HashMap;
use std::sync::Arc;

/// One domain's latents in one batch: `rows x dim` values, row-major.
/// Shared (`Arc`) so a validation batch's single-domain groups reuse the
/// paired group's latents.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainBatch {
    data: Arc<Vec<f32>>,
    rows: usize,
    dim: usize,
}

impl DomainBatch {
    /// Wraps `rows * dim` values (row-major).
    pub fn new(data: Vec<f32>, rows: usize, dim: usize) -> Self {
        debug_assert_eq!(data.len(), rows * dim);
        Self {
            data: Arc::new(data),
            rows,
            dim,
        }
    }

    /// The values, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Items in the batch.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Latent size.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `[rows, dim]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.dim]
    }

    /// Whether two batches share the same storage.
    pub fn shares_data_with(&self, other: &DomainBatch) -> bool {
        Arc::ptr_eq(&self.data, &other.data)
    }

    /// A `[rows, dim]` f32 tensor on `device`.
    pub fn to_tensor(&self, device: &Device) -> candle_core::Result<Tensor> {
        Tensor::from_slice(self.data.as_slice(), (self.rows, self.dim), device)
    }
}

/// One group's part of a batch: which items, and each domain's latents of
/// those items (paired row by row).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupBatch {
    /// The split the items come from.
    pub split: shimmer_plugin_api::Split,
    /// Item indices within the group's split, one per row.
    pub items: Arc<[u64]>,
    /// Latents per domain, in the group's domain order.
    pub domains: IndexMap<String, DomainBatch>,
}

impl GroupBatch {
    /// A group part of training items and their latents.
    pub fn new(items: Arc<[u64]>, domains: IndexMap<String, DomainBatch>) -> Self {
        Self {
            split: shimmer_plugin_api::Split::Train,
            items,
            domains,
        }
    }

    /// The same part, its items from `split`.
    pub fn in_split(mut self, split: shimmer_plugin_api::Split) -> Self {
        self.split = split;
        self
    }

    /// Items in this group's part of the batch.
    pub fn rows(&self) -> usize {
        self.items.len()
    }
}

/// A batch in host memory: `group name -> domain -> latents`.
#[derive(Clone, Debug, PartialEq)]
pub struct HostBatch {
    /// Epoch the batch belongs to.
    pub epoch: u64,
    /// Lightning's `dataloader_idx` (the set of a `sequential` batch, else 0).
    pub loader: usize,
    /// Lightning's `batch_idx`.
    pub batch_idx: usize,
    /// The groups present, in group order.
    pub groups: IndexMap<String, GroupBatch>,
}

impl HostBatch {
    /// An empty batch.
    pub fn new(epoch: u64, loader: usize, batch_idx: usize) -> Self {
        Self {
            epoch,
            loader,
            batch_idx,
            groups: IndexMap::new(),
        }
    }

    /// Tensors on `device`, `group -> domain -> [batch, latent_dim]`.
    /// Latents shared between groups are copied to the device once.
    pub fn to_tensors(
        &self,
        device: &Device,
    ) -> candle_core::Result<IndexMap<String, IndexMap<String, Tensor>>> {
        let mut done: HashMap<*const Vec<f32>, Tensor> = HashMap::new();
        let mut out = IndexMap::with_capacity(self.groups.len());
        for (group, part) in &self.groups {
            let mut domains = IndexMap::with_capacity(part.domains.len());
            for (domain, latents) in &part.domains {
                let key = Arc::as_ptr(&latents.data);
                let t = match done.get(&key) {
                    Some(t) => t.clone(),
                    None => {
                        let t = latents.to_tensor(device)?;
                        done.insert(key, t.clone());
                        t
                    }
                };
                domains.insert(domain.clone(), t);
            }
            out.insert(group.clone(), domains);
        }
        Ok(out)
    }

    /// The batch as the GW takes it: groups keyed by their domains
    /// ([`GroupKey`], in the group's domain order), tensors on `device`.
    /// Two groups of the same domains cannot share one batch there: that
    /// is an error.
    pub fn to_gw_batch(&self, device: &Device) -> anyhow::Result<GwBatch> {
        let mut out = GwBatch::with_capacity(self.groups.len());
        for (name, domains) in self.to_tensors(device)? {
            let key = GroupKey::new(domains.keys().cloned());
            if out.insert(key.clone(), domains).is_some() {
                anyhow::bail!(
                    "group `{name}` has the same domains ({key}) as another group of the batch; \
                     the GW takes one group per set of domains"
                );
            }
        }
        Ok(out)
    }

    /// A 64-bit FNV-1a digest of everything in the batch (indices, names,
    /// items, shapes and the bits of every value): equal batches, equal digests.
    pub fn digest(&self) -> u64 {
        let mut h = Fnv1a::new();
        h.write(&self.epoch.to_le_bytes());
        h.write(&(self.loader as u64).to_le_bytes());
        h.write(&(self.batch_idx as u64).to_le_bytes());
        for (group, part) in &self.groups {
            h.write(group.as_bytes());
            h.write(&[0xff]);
            for i in part.items.iter() {
                h.write(&i.to_le_bytes());
            }
            for (domain, latents) in &part.domains {
                h.write(domain.as_bytes());
                h.write(&[0xfe]);
                h.write(&(latents.rows as u64).to_le_bytes());
                h.write(&(latents.dim as u64).to_le_bytes());
                for v in latents.data.iter() {
                    h.write(&v.to_bits().to_le_bytes());
                }
            }
        }
        h.finish()
    }
}

/// FNV-1a, 64 bits: a stable hash (same value on every platform and Rust
/// version), used for digests and cache file names.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// FNV-1a (64 bits) of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a::new();
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_latents_become_one_tensor_and_digest_sees_values() {
        let a = DomainBatch::new(vec![1.0, 2.0], 1, 2);
        let mut b = HostBatch::new(0, 0, 0);
        let items: Arc<[u64]> = vec![7].into();
        b.groups.insert(
            "a,b".into(),
            GroupBatch::new(
                items.clone(),
                [
                    ("a".to_string(), a.clone()),
                    ("b".to_string(), DomainBatch::new(vec![3.0], 1, 1)),
                ]
                .into(),
            ),
        );
        b.groups.insert(
            "a".into(),
            GroupBatch::new(items, [("a".to_string(), a)].into()),
        );
        let t = b.to_tensors(&Device::Cpu).unwrap();
        assert_eq!(t["a,b"]["b"].dims(), [1, 1]);
        assert_eq!(t["a"]["a"].id(), t["a,b"]["a"].id());
        let gw = b.to_gw_batch(&Device::Cpu).unwrap();
        let keys: Vec<String> = gw.keys().map(ToString::to_string).collect();
        assert_eq!(keys, ["a+b", "a"]);
        let d = b.digest();
        let mut c = b.clone();
        assert_eq!(c.digest(), d);
        c.groups["a"].domains["a"] = DomainBatch::new(vec![1.0, 2.5], 1, 2);
        assert_ne!(c.digest(), d);
    }

    #[test]
    fn two_groups_of_the_same_domains_cannot_become_one_gw_batch() {
        let mut b = HostBatch::new(0, 0, 0);
        for name in ["a-paired", "a-all"] {
            let a = DomainBatch::new(vec![1.0], 1, 1);
            b.groups.insert(
                name.into(),
                GroupBatch::new(vec![0].into(), [("a".to_string(), a)].into()),
            );
        }
        let err = b.to_gw_batch(&Device::Cpu).unwrap_err().to_string();
        assert!(
            err.contains("a-all") && err.contains("same domains"),
            "{err}"
        );
    }

    #[test]
    fn fnv1a_matches_the_reference_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
