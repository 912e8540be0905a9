//! The download path, one way: a change from E is planned against what R has ([`look`] gathers
//! it, [`plan`] decides), its bytes are fetched over the connection ([`fetch`]), and it lands
//! on R ([`land`]: sealed, flushed in batches, renamed, recorded). `sync` drives the three in
//! that order; nothing here calls back up. A dry run tells a plan instead ([`preview`]).

pub mod fetch;
pub mod land;
pub mod look;
pub mod plan;
pub mod preview;
