//! Library-level tests of the pure core: real upstream data and property
//! tests; and verdicts end to end through the binary on vendored data.

mod boundaries;
mod properties;
mod real_data;
mod support;
mod verdict;
