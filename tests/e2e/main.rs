//! The end-to-end tests: one test binary that builds the `shimmer` binary
//! and the plugins once, then drives them as a user would. One module per
//! theme.

mod arrays;
mod bench;
mod callbacks;
mod common;
mod data_pipeline;
mod hotswap;
mod interop;
mod parity;
mod plugins;
mod readme;
mod refusals;
mod refusals_files;
mod refusals_input;
mod run;
mod simple_shapes;
mod slurm;
mod smoke;
mod sweep;
mod tensorboard;
