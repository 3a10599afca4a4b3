//! Indexed, mutable state per source: objects keyed by identity plus the
//! reverse maps that let a change be judged by touching only what it touches.

pub mod aws;
pub mod k8s;
pub mod k8s_live;
