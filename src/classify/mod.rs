//! Classification: gained and lost permissions in; direction, risk tags,
//! severity and a concrete witness out. Pure rules, one module per platform.

pub mod aws;
pub mod k8s;
