//! End-to-end: hostile configuration input (reference chains, deep dotted
//! keys, `extends` diamonds, non-finite plugin settings, Slurm fields,
//! overflowing numbers) refused at its key, in bounded time and memory.
