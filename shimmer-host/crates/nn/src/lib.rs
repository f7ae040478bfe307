//! The neural side of a Global Workspace in candle, number for number
//! faithful to shimmer: parameters ([`params`]), layers ([`layers`]), the GW
//! module and selection ([`gw`]), losses ([`losses`]), the model that ties
//! them together ([`GlobalWorkspace`]), AdamW and its schedules
//! ([`optim`]), weight files
//! under shimmer's names ([`checkpoint`]), weights of every kind a
//! researcher has, shimmer's and Lightning's included ([`weights`]), PyTorch and
//! Lightning checkpoints read without running their pickle
//! ([`torch_checkpoint`]), devices ([`device`]) and the
//! replay of shimmer's golden data ([`replay`]).
//!
//! On the CPU, the hot spots run as the fused kernels of `shimmer-kernels`
//! (see [`ops`]).

pub mod checkpoint;
pub mod device;
pub mod gw;
pub mod layers;
pub mod losses;
pub mod ops;
pub mod optim;
pub mod params;
pub mod replay;
pub mod torch_checkpoint;
pub mod weights;
pub mod workspace;

pub use gw::{Batch, DomainSpec, GroupKey, Latents};
pub use params::ParamStore;
pub use workspace::{GlobalWorkspace, LossOutput};
