//! The callback that logs a task's image grids ([`crate::grid`]) of a
//! fixed set of validation items after each validation ([`ImageLogger`]).

use crate::callback::{Callback, FitContext, Flow};
use anyhow::{Context, Result};
use indexmap::IndexMap;
use shimmer_data::HostBatch;

/// The first `n` rows of every group of `batch`.
pub fn first_items(batch: &HostBatch, n: usize) -> HostBatch {
    let mut out = HostBatch::new(batch.epoch, batch.loader, batch.batch_idx);
    for (name, g) in &batch.groups {
        let rows = g.rows().min(n);
        let domains: IndexMap<String, shimmer_data::DomainBatch> = g
            .domains
            .iter()
            .map(|(d, b)| {
                let data = b.data()[..rows * b.dim()].to_vec();
                (
                    d.clone(),
                    shimmer_data::DomainBatch::new(data, rows, b.dim()),
                )
            })
            .collect();
        let items: std::sync::Arc<[u64]> = g.items[..rows].into();
        out.groups.insert(
            name.clone(),
            shimmer_data::GroupBatch::new(items, domains).in_split(g.split),
        );
    }
    out
}

/// Logs the task's image grids of a fixed set of validation items after
/// each validation: in TensorBoard (Images tab) and as PNG files under the
/// run folder's `images/` (`images/<tag>/step-<N>.png`).
pub struct ImageLogger {
    batch: HostBatch,
}

/// How many times each pixel is enlarged (32x32 items show at 96x96).
const SCALE: u32 = 3;

impl ImageLogger {
    /// A logger of grids over the first `items` items of `batch`.
    pub fn new(batch: &HostBatch, items: usize) -> Self {
        Self {
            batch: first_items(batch, items),
        }
    }
}

impl Callback for ImageLogger {
    fn name(&self) -> &'static str {
        "image-logger"
    }

    fn on_validation_end(
        &mut self,
        ctx: &mut FitContext<'_>,
        _: &IndexMap<String, f64>,
    ) -> Result<Flow> {
        let step = ctx.position.global_step;
        let Some(task) = ctx.task.as_deref_mut() else {
            return Ok(Flow::Continue);
        };
        task.start_evaluation()?;
        let grids = task.image_grids(&self.batch);
        task.end_evaluation()?;
        let grids = grids?;
        for grid in grids {
            let (png, w, h) = grid.png(SCALE)?;
            ctx.logger.image(&grid.tag, step as i64, &png, w, h)?;
            let file = ctx
                .run_dir
                .path()
                .join(&grid.tag)
                .join(format!("step-{step}.png"));
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            shimmer_sys::fs::write_atomic(&file, &png)?;
        }
        Ok(Flow::Continue)
    }
}
