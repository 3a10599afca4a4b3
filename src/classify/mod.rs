//! Classification: gained and lost permissions in; direction, risk tags,
//! severity and a concrete witness out. Pure rules, one module per platform.

pub mod iam;
pub mod kube;
