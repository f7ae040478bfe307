//! Loading domain plugins: finding the library, checking its ABI, and safe
//! handles to the domains it creates.

pub mod inspect;
