//! Live sources: read access-control state from running systems and hand it on
//! in the same document shape the file inputs use, so the pure core never knows
//! whether a snapshot came from an API or from a file.

pub mod aws;
pub mod kube;
