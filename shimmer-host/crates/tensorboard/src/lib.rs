//! TensorBoard event files: scalars, text and HParams, written so
//! TensorBoard's own reader reads them back exactly. I/O errors are errors,
//! never panics.
//!
//! ```no_run
//! use shimmer_tensorboard::{EventWriter, HParam};
//!
//! let mut tb = EventWriter::create(std::path::Path::new("runs/demo/0"))?;
//! tb.scalar("train/loss", 0, 0.8)?;
//! tb.text("config", 0, "```yaml\nseed: 0\n```")?;
//! tb.session_start(&[("optim.lr".into(), HParam::Number(1e-3))])?;
//! tb.flush()?;
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod proto;
mod record;
mod writer;

pub use writer::{
    EVENT_FILE_PREFIX, EventWriter, HParam, HParamColumn, SessionStatus, event_files,
};
