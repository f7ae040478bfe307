//! The allowed range of every numeric setting, checked when an experiment
//! is loaded (so `shimmer validate` refuses what a run would choke on:
//! a zero-sized workspace, a negative or infinite learning rate, a
//! hundred thousand loader threads), each failure naming its key.

use crate::check::CheckError;
use crate::domain_model::DomainModelConfig;
use crate::experiment::{Experiment, SchedulerConfig, SelectionConfig};

/// Widest layer (workspace, hidden, latent sizes).
pub const MAX_WIDTH: usize = 1 << 16;
/// Most extra hidden layers of an MLP.
pub const MAX_LAYERS: usize = 64;
/// Largest batch (items per group).
pub const MAX_BATCH: usize = 1 << 20;
/// Most loader threads.
pub const MAX_WORKERS: usize = 256;
/// Most batches prepared ahead.
pub const MAX_PREFETCH: usize = 1024;
/// Most optimiser steps of a run, and the largest step count of any
/// setting (`max_steps`, `total_steps`, intervals): years of training at
/// thousands of steps a second, far from overflowing the step counters
/// (`max_epochs` × batches per epoch stays within `u64` for any epoch
/// of fewer than 2^40 batches).
pub const MAX_STEPS: usize = 1 << 40;
/// Most epochs of a run (see [`MAX_STEPS`]).
pub const MAX_EPOCHS: usize = 1 << 24;
/// Largest `|logit_scale|`: the contrastive loss computes
/// `exp(logit_scale)` in `f32`, infinite past `ln(f32::MAX)` ≈ 88.72.
pub const MAX_LOGIT_SCALE: f64 = 88.0;

fn int(key: &str, v: usize, lo: usize, hi: usize) -> Result<(), CheckError> {
    let why = if v > hi { " (too large)" } else { "" };
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(CheckError::new(
            key,
            format!("{v} is out of range{why}: it must be between {lo} and {hi}"),
        ))
    }
}

/// `lo < v` (or `lo <= v` when `lo_inclusive`) and `v <= hi`, finite.
fn float(key: &str, v: f64, lo: f64, lo_inclusive: bool, hi: f64) -> Result<(), CheckError> {
    let above = if lo_inclusive { v >= lo } else { v > lo };
    if v.is_finite() && above && v <= hi {
        return Ok(());
    }
    let low = if lo_inclusive { ">=" } else { ">" };
    Err(CheckError::new(
        key,
        format!("{v} is out of range: it must be a finite number {low} {lo} and <= {hi}"),
    ))
}

/// The sizes of a domain model (its other checks are its own).
fn domain_model(key: &str, model: &DomainModelConfig) -> Result<(), CheckError> {
    let k = |field: &str| format!("{key}.{field}");
    match *model {
        DomainModelConfig::Identity => {}
        DomainModelConfig::Linear { latent_dim } => {
            int(&k("latent_dim"), latent_dim, 1, MAX_WIDTH)?
        }
        DomainModelConfig::Mlp {
            latent_dim,
            hidden,
            n_layers,
        }
        | DomainModelConfig::Vae {
            latent_dim,
            hidden,
            n_layers,
            ..
        } => {
            int(&k("latent_dim"), latent_dim, 1, MAX_WIDTH)?;
            int(&k("hidden"), hidden, 1, MAX_WIDTH)?;
            int(&k("n_layers"), n_layers, 0, MAX_LAYERS)?;
        }
        DomainModelConfig::ConvVae {
            latent_dim,
            ae_dim,
            channels,
            ..
        } => {
            int(&k("latent_dim"), latent_dim, 1, MAX_WIDTH)?;
            int(&k("ae_dim"), ae_dim, 8, MAX_WIDTH)?;
            int(&k("channels"), channels, 1, 64)?;
        }
        DomainModelConfig::AttributeVae {
            latent_dim,
            hidden,
            classes,
            ..
        } => {
            int(&k("latent_dim"), latent_dim, 1, MAX_WIDTH)?;
            int(&k("hidden"), hidden, 1, MAX_WIDTH)?;
            int(&k("classes"), classes, 1, MAX_WIDTH)?;
        }
    }
    Ok(())
}

/// Checks every numeric setting of `exp` against its range.
///
/// # Errors
/// The first setting out of range, with its key.
pub fn check(exp: &Experiment) -> Result<(), CheckError> {
    for (name, d) in &exp.domains {
        if let Some(dim) = d.latent_dim {
            int(&format!("domains.{name}.latent_dim"), dim, 1, MAX_WIDTH)?;
        }
        domain_model(&format!("domains.{name}.model"), &d.model.arch)?;
    }
    if let Some(ws) = &exp.workspace {
        int("workspace.dim", ws.dim, 1, MAX_WIDTH)?;
        for (side, mlp) in [("encoders", ws.encoders), ("decoders", ws.decoders)] {
            int(
                &format!("workspace.{side}.hidden"),
                mlp.hidden,
                1,
                MAX_WIDTH,
            )?;
            int(
                &format!("workspace.{side}.n_layers"),
                mlp.n_layers,
                0,
                MAX_LAYERS,
            )?;
        }
        match ws.selection() {
            SelectionConfig::Random { temperature } => {
                float(
                    "workspace.selection.temperature",
                    temperature,
                    0.0,
                    false,
                    1e6,
                )?;
            }
            SelectionConfig::KqFixedQ { head_size } => {
                int("workspace.selection.head_size", head_size, 1, MAX_WIDTH)?;
            }
            SelectionConfig::DynamicQuery { head_size, n_steps } => {
                int("workspace.selection.head_size", head_size, 1, MAX_WIDTH)?;
                int("workspace.selection.n_steps", n_steps, 0, MAX_LAYERS)?;
            }
            SelectionConfig::SingleDomain | SelectionConfig::FixedShared => {}
        }
        float(
            "workspace.contrastive.logit_scale",
            ws.contrastive.logit_scale,
            -MAX_LOGIT_SCALE,
            true,
            MAX_LOGIT_SCALE,
        )?;
    }
    let data = &exp.data;
    int("data.batch_size", data.batch_size, 1, MAX_BATCH)?;
    int("data.workers", data.workers, 0, MAX_WORKERS)?;
    int("data.prefetch", data.prefetch, 1, MAX_PREFETCH)?;
    let o = &exp.optim;
    float("optim.lr", o.lr, 0.0, false, 10.0)?;
    float("optim.weight_decay", o.weight_decay, 0.0, true, 10.0)?;
    float("optim.betas.0", o.betas[0], 0.0, true, 1.0 - f64::EPSILON)?;
    float("optim.betas.1", o.betas[1], 0.0, true, 1.0 - f64::EPSILON)?;
    float("optim.eps", o.eps, 0.0, false, 1.0)?;
    match o.scheduler {
        SchedulerConfig::None => {}
        SchedulerConfig::OneCycle {
            max_lr,
            total_steps,
            pct_start,
            div_factor,
            final_div_factor,
            base_momentum,
            max_momentum,
            ..
        } => {
            if let Some(lr) = max_lr {
                float("optim.scheduler.max_lr", lr, 0.0, false, 10.0)?;
            }
            if let Some(t) = total_steps {
                int("optim.scheduler.total_steps", t, 1, MAX_STEPS)?;
            }
            float("optim.scheduler.pct_start", pct_start, 0.0, false, 1.0)?;
            float("optim.scheduler.div_factor", div_factor, 0.0, false, 1e12)?;
            float(
                "optim.scheduler.final_div_factor",
                final_div_factor,
                0.0,
                false,
                1e12,
            )?;
            float(
                "optim.scheduler.base_momentum",
                base_momentum,
                0.0,
                true,
                1.0,
            )?;
            float("optim.scheduler.max_momentum", max_momentum, 0.0, true, 1.0)?;
        }
        SchedulerConfig::Cosine {
            total_steps,
            min_lr,
            ..
        } => {
            if let Some(t) = total_steps {
                int("optim.scheduler.total_steps", t, 1, MAX_STEPS)?;
            }
            float("optim.scheduler.min_lr", min_lr, 0.0, true, 10.0)?;
        }
    }
    let t = &exp.training;
    if let Some(s) = t.max_steps {
        int("training.max_steps", s, 1, MAX_STEPS)?;
    }
    if let Some(e) = t.max_epochs {
        int("training.max_epochs", e, 1, MAX_EPOCHS)?;
    }
    int(
        "training.log_every_n_steps",
        t.log_every_n_steps,
        1,
        MAX_STEPS,
    )?;
    if let Some(v) = t.val_every_n_steps {
        int("training.val_every_n_steps", v, 1, MAX_STEPS)?;
    }
    int(
        "training.watchdog_s",
        t.watchdog_s as usize,
        0,
        7 * 24 * 3600,
    )?;
    int(
        "training.checkpoints.save_top_k",
        t.checkpoints.save_top_k,
        1,
        10_000,
    )?;
    if let Some(es) = &t.early_stopping {
        int(
            "training.early_stopping.patience",
            es.patience,
            1,
            1_000_000,
        )?;
        float(
            "training.early_stopping.min_delta",
            es.min_delta,
            0.0,
            true,
            1e12,
        )?;
    }
    if let Some(c) = t.gradient_clip {
        float("training.gradient_clip", c, 0.0, false, 1e12)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    fn exp(overrides: &[&str]) -> Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.yaml");
        std::fs::write(
            &path,
            "name: r\ndomains: { a: { latent_dim: 4 }, b: { latent_dim: 3 } }\n\
             workspace: { flavour: two_domains, dim: 8, encoders: { hidden: 16, n_layers: 1 },\n             decoders: { hidden: 16, n_layers: 1 } }\ntraining: { max_steps: 3 }\n",
        )
        .unwrap();
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        crate::load(&path, &o)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn out_of_range_values_are_refused_at_their_key() {
        assert!(exp(&[]).is_ok());
        for (o, key) in [
            ("workspace.dim=0", "workspace.dim"),
            ("workspace.dim=4294967297", "workspace.dim"),
            ("workspace.encoders.hidden=0", "workspace.encoders.hidden"),
            (
                "workspace.encoders.n_layers=100000",
                "workspace.encoders.n_layers",
            ),
            ("data.workers=100000", "data.workers"),
            ("optim.lr=-1", "optim.lr"),
            ("optim.lr=.nan", "optim.lr"),
            ("optim.lr=.inf", "optim.lr"),
            ("training.gradient_clip=-1", "training.gradient_clip"),
            ("optim.betas=[0.9, 1.0]", "optim.betas.1"),
            ("data.batch_size=0", "data.batch_size"),
            (
                "training.max_epochs=4611686018427387904",
                "training.max_epochs",
            ),
            (
                "training.max_steps=4611686018427387904",
                "training.max_steps",
            ),
            (
                "workspace.contrastive.logit_scale=100",
                "workspace.contrastive.logit_scale",
            ),
            (
                "domains.a.model={type: mlp, latent_dim: 4, hidden: 100000000}",
                "domains.a.model.hidden",
            ),
        ] {
            let err = exp(&[o]).unwrap_err();
            assert!(
                err.contains(&format!("{key}: ")) && err.contains("out of range"),
                "{o}: {err}"
            );
        }
        let err = exp(&["training.max_epochs=4611686018427387904"]).unwrap_err();
        assert!(err.contains("too large"), "{err}");
        assert!(exp(&["workspace.contrastive.logit_scale=88"]).is_ok());
    }
}
