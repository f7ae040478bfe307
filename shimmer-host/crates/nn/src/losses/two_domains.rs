//! shimmer's `GWLosses2Domains`: demi-cycles, cycles, translations and
//! contrastives, with shimmer's metric names and emission order.
//!
//! * `demi_cycle_{d}` on each one-domain group `{d}`: `g_d(fuse(e_d(z_d)))`
//!   vs `z_d`; `demi_cycles` = their mean.
//! * `cycle_{s}_through_{t}` on each one-domain group `{s}`, for every other
//!   model domain `t`; `cycles` = their mean.
//! * `translation_{sources}_to_{t}` on each group of two or more domains, for
//!   every target `t` of the group (sources joined with `/`);
//!   `translations` = their mean.
//! * the contrastive metrics of [`super::contrastive::contrastive_metrics`].
//!
//! A family whose group type is missing from the batch (or whose domain
//! losses are all disabled) is left out instead of failing as shimmer does.

use super::contrastive::{ContrastiveLoss, contrastive_metrics};
use super::{EncodedGroup, LossContext, Metrics, Term, mean};
use crate::gw::Latents;
use anyhow::{Context, Result};
use candle_core::Tensor;
use shimmer_plugin_api::LossUse;

/// All metrics of one batch (its groups encoded once, see
/// [`super::encode_batch`]), in shimmer's emission order.
pub fn two_domain_metrics(
    ctx: &LossContext<'_>,
    batch: &[EncodedGroup<'_>],
    f: &ContrastiveLoss,
) -> Result<Metrics> {
    let mut out = Metrics::new();
    out.extend(demi_cycles(ctx, batch)?);
    out.extend(cycles(ctx, batch)?);
    out.extend(translations(ctx, batch)?);
    out.extend(contrastive_metrics(batch, f)?);
    Ok(out)
}

fn with_mean(mut losses: Metrics, name: &str) -> Result<Metrics> {
    if !losses.is_empty() {
        let values: Vec<Tensor> = losses.values().cloned().collect();
        losses.insert(name.to_string(), mean(&values)?);
    }
    Ok(losses)
}

/// `demi_cycle_{d}` and `demi_cycles`.
pub fn demi_cycles(ctx: &LossContext<'_>, batch: &[EncodedGroup<'_>]) -> Result<Metrics> {
    let mut losses = Metrics::new();
    for group in batch {
        let (Some((d, z)), Some(gw)) = (single(group.latents), &group.single_state) else {
            continue;
        };
        let pred = ctx.gw.decode(gw, Some(&[d]))?;
        let name = format!("demi_cycle_{d}");
        let term = Term {
            metric: &name,
            group: group.index,
        };
        if let Some(l) = ctx.domain_loss(term, d, LossUse::DemiCycle, &pred[d], z)? {
            losses.insert(name, l);
        }
    }
    with_mean(losses, "demi_cycles")
}

/// `cycle_{s}_through_{t}` and `cycles`.
pub fn cycles(ctx: &LossContext<'_>, batch: &[EncodedGroup<'_>]) -> Result<Metrics> {
    let mut losses = Metrics::new();
    for group in batch {
        let (Some((s, z)), Some(gw)) = (single(group.latents), &group.single_state) else {
            continue;
        };
        for t in ctx.gw.domains() {
            if t == s {
                continue;
            }
            let mid = ctx.gw.decode(gw, Some(&[t]))?;
            let back = ctx.gw.encode_and_fuse(&mid, ctx.selection)?;
            let pred = ctx.gw.decode(&back, Some(&[s]))?;
            let name = format!("cycle_{s}_through_{t}");
            let term = Term {
                metric: &name,
                group: group.index,
            };
            if let Some(l) = ctx.domain_loss(term, s, LossUse::Cycle, &pred[s], z)? {
                losses.insert(name, l);
            }
        }
    }
    with_mean(losses, "cycles")
}

/// `translation_{sources}_to_{t}` and `translations`.
pub fn translations(ctx: &LossContext<'_>, batch: &[EncodedGroup<'_>]) -> Result<Metrics> {
    let mut losses = Metrics::new();
    for group in batch {
        let latents = group.latents;
        if latents.len() < 2 {
            continue;
        }
        for target in latents.keys() {
            let others = |m: &Latents| -> Latents {
                m.iter()
                    .filter(|(d, _)| *d != target)
                    .map(|(d, z)| (d.clone(), z.clone()))
                    .collect()
            };
            let sources = others(latents);
            let names: Vec<&str> = sources.keys().map(String::as_str).collect();
            let name = format!("translation_{}_to_{target}", names.join("/"));
            let gw = ctx
                .gw
                .fuse_selected(&sources, &others(&group.encodings), ctx.selection)?;
            let pred = ctx
                .gw
                .decode(&gw, Some(&[target.as_str()]))?
                .swap_remove(target)
                .context("translation output")?;
            let z = latents.get(target).context("target latent")?;
            let term = Term {
                metric: &name,
                group: group.index,
            };
            if let Some(l) = ctx.domain_loss(term, target, LossUse::Translation, &pred, z)? {
                losses.insert(name, l);
            }
        }
    }
    with_mean(losses, "translations")
}

/// The domain and latent of a one-domain group.
fn single(latents: &Latents) -> Option<(&str, &Tensor)> {
    if latents.len() != 1 {
        return None;
    }
    latents.iter().next().map(|(d, z)| (d.as_str(), z))
}
