//! shimmer's broadcast loss (`GWLosses`, fusion flavour), quirks included.
//!
//! For each group `G` in batch order and each non-empty subset `S` of `G`
//! (from `itertools.product([0, 1], repeat=|G|)` over `G`'s order), the
//! fusion `h` of `S` is decoded into every model domain; for each domain
//! `d ∈ G` (model order) `from_{S}_to_{d}_loss` compares the prediction with
//! `z_d`: a demi-cycle when `S = {d}`, a translation when `d ∉ S`, otherwise
//! a fused loss. When `|S|` is less than the number of **model** domains, the
//! predictions of every model domain not in `S` (even those absent from `G`)
//! are fused again and decoded into `S`:
//! `from_{S}_through_{I}_to_{d}_case_{G}_loss` (a cycle). Sets are written
//! sorted and comma-joined, e.g. `{q,r}`.
//!
//! A `from_{S}_to_{d}_loss` name that recurs in several groups keeps its first
//! position and the *last* group's value, but is counted once per occurrence
//! in the `demi_cycles` / `translations` / `fused` means — as shimmer does.
//! A domain loss disabled for a use is left out.

use super::{EncodedGroup, LossContext, Metrics, Term, mean};
use crate::gw::Latents;
use anyhow::{Context, Result};
use candle_core::Tensor;
use shimmer_plugin_api::LossUse;

/// `{a,b}`: sorted, comma-joined.
fn label<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = names.into_iter().collect();
    v.sort_unstable();
    format!("{{{}}}", v.join(","))
}

/// The broadcast metrics of one batch: `demi_cycles`, `cycles`,
/// `translations`, `fused` (those with at least one term), then every
/// `from_…` loss in first-insertion order.
pub fn broadcast_metrics(ctx: &LossContext<'_>, batch: &[EncodedGroup<'_>]) -> Result<Metrics> {
    let mut losses = Metrics::new();
    let (mut demi, mut cyc, mut tr, mut fused) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let n_model = ctx.gw.domains().count();
    for encoded_group in batch {
        let (latents, encoded) = (encoded_group.latents, &encoded_group.encodings);
        let group: Vec<&str> = latents.keys().map(String::as_str).collect();
        let case = label(group.iter().copied());
        let n = group.len();
        for mask in 1..(1usize << n) {
            // product([0,1], repeat=n) in order: the first domain is the most
            // significant bit.
            let selected: Vec<&str> = (0..n)
                .filter(|i| mask >> (n - 1 - i) & 1 == 1)
                .map(|i| group[i])
                .collect();
            let sel_latents = pick(latents, &selected)?;
            let sel_encoded = pick(encoded, &selected)?;
            let s_label = label(selected.iter().copied());
            let h = match &encoded_group.single_state {
                Some(state) => state.clone(),
                None => ctx
                    .gw
                    .fuse_selected(&sel_latents, &sel_encoded, ctx.selection)?,
            };
            let decoded = ctx.gw.decode(&h, None)?;
            for (d, pred) in &decoded {
                let Some(truth) = latents.get(d) else {
                    continue;
                };
                let in_s = selected.contains(&d.as_str());
                let (use_, list) = if selected.len() == 1 && in_s {
                    (LossUse::DemiCycle, &mut demi)
                } else if !in_s {
                    (LossUse::Translation, &mut tr)
                } else {
                    (LossUse::Fused, &mut fused)
                };
                let name = format!("from_{s_label}_to_{d}_loss");
                let term = Term {
                    metric: &name,
                    group: encoded_group.index,
                };
                if let Some(l) = ctx.domain_loss(term, d, use_, pred, truth)? {
                    losses.insert(name.clone(), l);
                    list.push(name);
                }
            }
            if selected.len() < n_model {
                let inverse: Latents = decoded
                    .iter()
                    .filter(|(d, _)| !selected.contains(&d.as_str()))
                    .map(|(d, t)| (d.clone(), t.clone()))
                    .collect();
                let i_label = label(inverse.keys().map(String::as_str));
                let back = ctx.gw.encode_and_fuse(&inverse, ctx.selection)?;
                let re_decoded = ctx.gw.decode(&back, Some(&selected))?;
                for d in &selected {
                    let truth = latents.get(*d).context("selected latent")?;
                    let name = format!("from_{s_label}_through_{i_label}_to_{d}_case_{case}_loss");
                    let term = Term {
                        metric: &name,
                        group: encoded_group.index,
                    };
                    if let Some(l) =
                        ctx.domain_loss(term, d, LossUse::Cycle, &re_decoded[*d], truth)?
                    {
                        losses.insert(name.clone(), l);
                        cyc.push(name);
                    }
                }
            }
        }
    }
    let mut out = Metrics::new();
    for (name, list) in [
        ("demi_cycles", &demi),
        ("cycles", &cyc),
        ("translations", &tr),
        ("fused", &fused),
    ] {
        if list.is_empty() {
            continue;
        }
        let values = list
            .iter()
            .map(|n| losses[n].clone())
            .collect::<Vec<Tensor>>();
        out.insert(name.to_string(), mean(&values)?);
    }
    out.extend(losses);
    Ok(out)
}

/// The entries of `m` named in `names`, in that order.
fn pick(m: &Latents, names: &[&str]) -> Result<Latents> {
    names
        .iter()
        .map(|n| {
            Ok((
                n.to_string(),
                m.get(*n)
                    .with_context(|| format!("no latent for `{n}`"))?
                    .clone(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sorted_and_comma_joined() {
        assert_eq!(label(["r", "q"]), "{q,r}");
        assert_eq!(label(["p"]), "{p}");
    }
}
