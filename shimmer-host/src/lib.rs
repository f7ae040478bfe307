//! shimmer-rs host: loads domain plugins, builds and trains Global Workspace
//! models in candle, and writes runs researchers can inspect.
//!
//! One module per concern; the `shimmer` binary only parses its command line
//! and calls into these.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod domain_model;
pub mod gw;
pub mod hotswap;
pub mod kernels;
pub mod losses;
pub mod optim;
pub mod plugin;
pub mod replay;
pub mod sweep;
pub mod tensorboard;
pub mod train;
pub mod yaml;

#[cfg(test)]
mod test_util;
