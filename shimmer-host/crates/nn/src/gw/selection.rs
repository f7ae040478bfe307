//! Selection modules (shimmer 0.6): per batch item, one score per domain of
//! a group, summing to one, that weights the pre-fusion encodings in the
//! fusion `tanh(Σ_d s_d · e_d(z_d))`.
//!
//! * [`SelectionConfig::SingleDomain`]: one domain per item drawn uniformly
//!   (scores 0/1).
//! * [`SelectionConfig::FixedShared`]: `1/n` for every domain.
//! * [`SelectionConfig::Random`]: `softmax(U(0,1)[n, B] / T)` over domains.
//! * [`SelectionConfig::DynamicQuery`]: key/query attention. Each domain has
//!   a key layer `Linear(latent_dim_d, head)` applied to its unimodal latent;
//!   a query layer `Linear(workspace_dim, head)` reads a uniform random initial
//!   state (stored as the buffer `selection_mod.gw_state`); scores = softmax
//!   over domains of `key_d · query`; then `n_steps` times the query is
//!   recomputed from the score-weighted sum of the pre-fusion encodings.
//!   shimmer requires every latent size to equal the workspace size; here
//!   each key layer takes its own domain's size, which is the same thing when
//!   they are equal.
//! * [`SelectionConfig::KqFixedQ`]: the same with `n_steps = 0`.
//!
//! A group of one domain always gets score 1. Random draws come from a
//! seeded ChaCha RNG, so a run is reproducible; they are made on the host
//! and copied to the model's device.

use super::Latents;
use crate::layers::Linear;
use crate::params::ParamStore;
use anyhow::{Context, Result, bail};
use candle_core::{D, DType, Device, Tensor, Var};
use indexmap::IndexMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shimmer_config::SelectionConfig;
use std::sync::Mutex;

/// Key/query attention parameters.
#[derive(Debug)]
struct Attention {
    query: Linear,
    keys: IndexMap<String, Linear>,
    state: Var,
    n_steps: usize,
}

#[derive(Debug)]
enum Kind {
    SingleDomain,
    FixedShared,
    Random { temperature: f64 },
    Attention(Attention),
}

/// The ChaCha stream evaluation passes draw from (training draws use 0).
const EVAL_STREAM: u64 = 1;

/// A selection module: computes fusion scores for a group of domains.
#[derive(Debug)]
pub struct Selection {
    kind: Kind,
    rng: Mutex<ChaCha8Rng>,
    /// Draws of an evaluation pass (see [`Selection::start_evaluation`]),
    /// while one runs.
    eval_rng: Mutex<Option<ChaCha8Rng>>,
    seed: u64,
    /// Fixed-shared scores by `(domains, batch size)`: made once on the
    /// device, not at every step.
    fixed: Mutex<std::collections::HashMap<(usize, usize), Tensor>>,
    device: Device,
    dtype: DType,
}

impl Selection {
    /// Builds the module for the model `domains` (name, latent size), in
    /// model order. Attention layers are registered in `store` under
    /// `selection_mod.…` and drawn from `init_rng`; the random scores of
    /// `single_domain` and `random` come from an RNG seeded with `seed`.
    pub fn new(
        cfg: &SelectionConfig,
        domains: &[(String, usize)],
        workspace_dim: usize,
        store: &mut ParamStore,
        init_rng: &mut impl Rng,
        seed: u64,
    ) -> Result<Self> {
        let kind = match *cfg {
            SelectionConfig::SingleDomain => Kind::SingleDomain,
            SelectionConfig::FixedShared => Kind::FixedShared,
            SelectionConfig::Random { temperature } => {
                if !(temperature.is_finite() && temperature > 0.0) {
                    bail!("random selection temperature must be > 0, got {temperature}");
                }
                Kind::Random { temperature }
            }
            SelectionConfig::KqFixedQ { head_size } => Kind::Attention(attention(
                domains,
                workspace_dim,
                head_size,
                0,
                store,
                init_rng,
            )?),
            SelectionConfig::DynamicQuery { head_size, n_steps } => Kind::Attention(attention(
                domains,
                workspace_dim,
                head_size,
                n_steps,
                store,
                init_rng,
            )?),
        };
        Ok(Self {
            kind,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            eval_rng: Mutex::new(None),
            seed,
            fixed: Mutex::new(std::collections::HashMap::new()),
            device: store.device().clone(),
            dtype: store.dtype(),
        })
    }

    /// Scores `[B]` per domain of the group, in the group's order. `latents`
    /// are the unimodal latents, `encodings` the pre-fusion encodings of the
    /// same domains.
    pub fn scores(&self, latents: &Latents, encodings: &Latents) -> Result<Latents> {
        let n = latents.len();
        let Some(first) = latents.values().next() else {
            bail!("selection over an empty group of domains");
        };
        let b = first.dim(0)?;
        if n == 1 {
            let ones = Tensor::ones(b, self.dtype, &self.device)?;
            return Ok(latents.keys().map(|k| (k.clone(), ones.clone())).collect());
        }
        let stacked = match &self.kind {
            Kind::SingleDomain => {
                let mut v = vec![0f32; n * b];
                self.draw(|rng| {
                    for i in 0..b {
                        let k = rng.random_range(0..n);
                        v[k * b + i] = 1.0;
                    }
                })?;
                self.host_tensor(v, n, b)?
            }
            Kind::FixedShared => {
                let mut cache = self
                    .fixed
                    .lock()
                    .map_err(|_| anyhow::anyhow!("selection cache poisoned"))?;
                match cache.get(&(n, b)) {
                    Some(t) => t.clone(),
                    None => {
                        let s = 1.0f32 / n as f32;
                        let t = self.host_tensor(vec![s; n * b], n, b)?;
                        cache.insert((n, b), t.clone());
                        t
                    }
                }
            }
            Kind::Random { temperature } => {
                let mut v = Vec::with_capacity(n * b);
                self.draw(|rng| v.extend((0..n * b).map(|_| rng.random::<f32>())))?;
                let u = self.host_tensor(v, n, b)?;
                candle_nn::ops::softmax(&(u / *temperature)?, 0)?
            }
            Kind::Attention(att) => att.scores(latents, encodings)?,
        };
        latents
            .keys()
            .enumerate()
            .map(|(i, k)| Ok((k.clone(), stacked.get(i)?)))
            .collect()
    }

    /// Position of the random-score generator, saved in checkpoints so a
    /// resumed run draws the same scores as an uninterrupted one.
    pub fn rng_position(&self) -> Result<u128> {
        Ok(self.lock_rng()?.get_word_pos())
    }

    /// Moves the random-score generator to a saved [`Selection::rng_position`].
    pub fn set_rng_position(&self, position: u128) -> Result<()> {
        self.lock_rng()?.set_word_pos(position);
        Ok(())
    }

    /// Starts an evaluation pass: until [`Selection::end_evaluation`], random
    /// scores come from a stream of their own, from its start, so every pass
    /// over the same data and weights draws the same scores (a validation
    /// repeated, or the best checkpoint validated again, gives the same
    /// numbers) and the training draws do not depend on how often the run
    /// validates.
    pub fn start_evaluation(&self) -> Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(EVAL_STREAM);
        *self.lock_eval_rng()? = Some(rng);
        Ok(())
    }

    /// Ends an evaluation pass: training draws go on where they stopped.
    pub fn end_evaluation(&self) -> Result<()> {
        *self.lock_eval_rng()? = None;
        Ok(())
    }

    /// Calls `f` with the generator random scores come from now.
    fn draw(&self, f: impl FnOnce(&mut ChaCha8Rng)) -> Result<()> {
        let mut eval = self.lock_eval_rng()?;
        match eval.as_mut() {
            Some(rng) => f(rng),
            None => f(&mut *self.lock_rng()?),
        }
        Ok(())
    }

    fn lock_eval_rng(&self) -> Result<std::sync::MutexGuard<'_, Option<ChaCha8Rng>>> {
        self.eval_rng
            .lock()
            .map_err(|_| anyhow::anyhow!("selection RNG poisoned by a panic in another thread"))
    }

    fn lock_rng(&self) -> Result<std::sync::MutexGuard<'_, ChaCha8Rng>> {
        self.rng
            .lock()
            .map_err(|_| anyhow::anyhow!("selection RNG poisoned by a panic in another thread"))
    }

    fn host_tensor(&self, v: Vec<f32>, n: usize, b: usize) -> Result<Tensor> {
        Ok(Tensor::from_vec(v, (n, b), &self.device)?.to_dtype(self.dtype)?)
    }
}

fn attention(
    domains: &[(String, usize)],
    workspace_dim: usize,
    head_size: usize,
    n_steps: usize,
    store: &mut ParamStore,
    rng: &mut impl Rng,
) -> Result<Attention> {
    if head_size == 0 {
        bail!("attention selection needs head_size > 0");
    }
    let query = Linear::new(
        store,
        "selection_mod.query_layer",
        workspace_dim,
        head_size,
        rng,
    )?;
    let mut keys = IndexMap::new();
    for (name, dim) in domains {
        let prefix = format!("selection_mod.key_layers.{name}");
        keys.insert(
            name.clone(),
            Linear::new(store, &prefix, *dim, head_size, rng)?,
        );
    }
    let init: Vec<f32> = (0..workspace_dim).map(|_| rng.random::<f32>()).collect();
    let state = Tensor::from_vec(init, workspace_dim, store.device())?;
    let state = store.add_buffer("selection_mod.gw_state", state)?;
    Ok(Attention {
        query,
        keys,
        state,
        n_steps,
    })
}

impl Attention {
    /// `[n, B]` scores, softmax over the domain axis.
    fn scores(&self, latents: &Latents, encodings: &Latents) -> Result<Tensor> {
        let mut keys = Vec::with_capacity(latents.len());
        for (name, z) in latents {
            let layer = self
                .keys
                .get(name)
                .with_context(|| format!("attention selection has no key layer for `{name}`"))?;
            keys.push(layer.forward(z)?);
        }
        let state = self.state.as_detached_tensor().unsqueeze(0)?;
        let mut scores = dot_softmax(&keys, &self.query.forward(&state)?)?;
        for _ in 0..self.n_steps {
            let mut fused: Option<Tensor> = None;
            for (i, name) in latents.keys().enumerate() {
                let e = encodings
                    .get(name)
                    .with_context(|| format!("no pre-fusion encoding for `{name}`"))?;
                let term = scores.get(i)?.unsqueeze(1)?.broadcast_mul(e)?;
                fused = Some(match fused {
                    None => term,
                    Some(acc) => (acc + term)?,
                });
            }
            let fused = fused.context("attention over no domain")?;
            scores = dot_softmax(&keys, &self.query.forward(&fused)?)?;
        }
        Ok(scores)
    }
}

/// `softmax_d(key_d · query)` as `[n, B]`; `query` is `[B, h]` or `[1, h]`.
fn dot_softmax(keys: &[Tensor], query: &Tensor) -> Result<Tensor> {
    let dots = keys
        .iter()
        .map(|k| Ok(k.broadcast_mul(query)?.sum(D::Minus1)?))
        .collect::<Result<Vec<_>>>()?;
    Ok(candle_nn::ops::softmax(&Tensor::stack(&dots, 0)?, 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(b: usize, dims: &[(&str, usize)]) -> Latents {
        dims.iter()
            .enumerate()
            .map(|(i, (n, d))| {
                let v: Vec<f32> = (0..b * d)
                    .map(|k| ((k * 7 + i * 3) % 11) as f32 / 11.0)
                    .collect();
                (
                    n.to_string(),
                    Tensor::from_vec(v, (b, *d), &Device::Cpu).unwrap(),
                )
            })
            .collect()
    }

    fn build(cfg: SelectionConfig, seed: u64) -> (Selection, ParamStore) {
        let mut store = ParamStore::new(&Device::Cpu, DType::F32);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let doms = [
            ("a".to_string(), 4),
            ("b".to_string(), 4),
            ("c".to_string(), 4),
        ];
        let s = Selection::new(&cfg, &doms, 4, &mut store, &mut rng, seed).unwrap();
        (s, store)
    }

    fn as_rows(scores: &Latents) -> Vec<Vec<f32>> {
        scores
            .values()
            .map(|t| t.to_vec1::<f32>().unwrap())
            .collect()
    }

    fn check_sums_to_one(rows: &[Vec<f32>], b: usize) {
        assert!(rows.iter().all(|r| r.len() == b));
        for i in 0..b {
            let s: f32 = rows.iter().map(|r| r[i]).sum();
            assert!((s - 1.0).abs() < 1e-6, "item {i} sums to {s}");
        }
    }

    const ALL: [SelectionConfig; 5] = [
        SelectionConfig::SingleDomain,
        SelectionConfig::FixedShared,
        SelectionConfig::Random { temperature: 0.2 },
        SelectionConfig::KqFixedQ { head_size: 3 },
        SelectionConfig::DynamicQuery {
            head_size: 3,
            n_steps: 2,
        },
    ];

    #[test]
    fn every_module_has_shape_and_sums_to_one() {
        let g = group(6, &[("a", 4), ("b", 4), ("c", 4)]);
        for cfg in ALL {
            let (s, _) = build(cfg, 0);
            let rows = as_rows(&s.scores(&g, &g).unwrap());
            assert_eq!(rows.len(), 3, "{cfg:?}");
            check_sums_to_one(&rows, 6);
            let single = group(6, &[("b", 4)]);
            let one = as_rows(&s.scores(&single, &single).unwrap());
            assert_eq!(one, vec![vec![1.0; 6]], "{cfg:?}");
        }
    }

    #[test]
    fn single_domain_is_one_hot_and_fixed_shared_is_uniform() {
        let g = group(50, &[("a", 4), ("c", 4)]);
        let (s, _) = build(SelectionConfig::SingleDomain, 0);
        let rows = as_rows(&s.scores(&g, &g).unwrap());
        assert!(rows.iter().flatten().all(|&x| x == 0.0 || x == 1.0));
        let picked_a = rows[0].iter().filter(|&&x| x == 1.0).count();
        assert!(picked_a > 10 && picked_a < 40, "{picked_a}");
        let (s, _) = build(SelectionConfig::FixedShared, 0);
        let g3 = group(2, &[("a", 4), ("b", 4), ("c", 4)]);
        let rows = as_rows(&s.scores(&g3, &g3).unwrap());
        assert!(rows.iter().flatten().all(|&x| x == 1.0f32 / 3.0));
    }

    #[test]
    fn every_evaluation_pass_draws_the_same_scores_and_leaves_training_draws_alone() {
        let g = group(16, &[("a", 4), ("b", 4)]);
        for cfg in [
            SelectionConfig::SingleDomain,
            SelectionConfig::Random { temperature: 0.5 },
        ] {
            // Training draws of a selection that never evaluates.
            let (plain, _) = build(cfg, 7);
            let train: Vec<_> = (0..3)
                .map(|_| as_rows(&plain.scores(&g, &g).unwrap()))
                .collect();
            let (s, _) = build(cfg, 7);
            let mut passes = Vec::new();
            let mut trained = Vec::new();
            for step in 0..3 {
                trained.push(as_rows(&s.scores(&g, &g).unwrap()));
                s.start_evaluation().unwrap();
                let pass: Vec<_> = (0..2)
                    .map(|_| as_rows(&s.scores(&g, &g).unwrap()))
                    .collect();
                s.end_evaluation().unwrap();
                assert_ne!(pass[0], pass[1], "{cfg:?}: batches of a pass differ");
                if step > 0 {
                    assert_eq!(pass, passes[0], "{cfg:?}: pass {step} draws as the first");
                }
                passes.push(pass);
            }
            assert_eq!(
                trained, train,
                "{cfg:?}: evaluations moved the training draws"
            );
            assert_ne!(passes[0][0], train[0], "{cfg:?}: a stream of its own");
        }
    }

    #[test]
    fn random_draws_are_deterministic_per_seed() {
        let g = group(5, &[("a", 4), ("b", 4)]);
        for cfg in [
            SelectionConfig::SingleDomain,
            SelectionConfig::Random { temperature: 0.5 },
        ] {
            let first = as_rows(&build(cfg, 42).0.scores(&g, &g).unwrap());
            let again = as_rows(&build(cfg, 42).0.scores(&g, &g).unwrap());
            let other = as_rows(&build(cfg, 43).0.scores(&g, &g).unwrap());
            assert_eq!(first, again);
            assert_ne!(first, other);
        }
    }

    #[test]
    fn attention_matches_hand_computation_and_registers_names() {
        let (s, store) = build(SelectionConfig::KqFixedQ { head_size: 3 }, 0);
        let names: Vec<_> = store.params().keys().cloned().collect();
        assert_eq!(names[0], "selection_mod.query_layer.weight");
        assert!(names.contains(&"selection_mod.key_layers.c.bias".to_string()));
        assert!(store.buffers().contains_key("selection_mod.gw_state"));
        let g = group(2, &[("a", 4), ("b", 4)]);
        let rows = as_rows(&s.scores(&g, &g).unwrap());
        // Recompute on the host.
        let p = |n: &str| {
            store.params()[n]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let lin = |w: &[f32], b: &[f32], x: &[f32]| -> Vec<f32> {
            (0..b.len())
                .map(|o| b[o] + (0..x.len()).map(|i| w[o * x.len() + i] * x[i]).sum::<f32>())
                .collect()
        };
        let state = store.buffers()["selection_mod.gw_state"]
            .to_vec1::<f32>()
            .unwrap();
        let q = lin(
            &p("selection_mod.query_layer.weight"),
            &p("selection_mod.query_layer.bias"),
            &state,
        );
        for (item, got) in rows[0].iter().enumerate() {
            let dots: Vec<f32> = ["a", "b"]
                .iter()
                .map(|d| {
                    let x = g[*d].get(item).unwrap().to_vec1::<f32>().unwrap();
                    let w = p(&format!("selection_mod.key_layers.{d}.weight"));
                    let bb = p(&format!("selection_mod.key_layers.{d}.bias"));
                    lin(&w, &bb, &x).iter().zip(&q).map(|(k, q)| k * q).sum()
                })
                .collect();
            let m = dots[0].max(dots[1]);
            let e: Vec<f32> = dots.iter().map(|d| (d - m).exp()).collect();
            let want = e[0] / (e[0] + e[1]);
            assert!((got - want).abs() < 1e-6);
        }
    }
}
