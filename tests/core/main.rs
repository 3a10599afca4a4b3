//! Library-level tests of the pure core: real upstream data and property tests.

mod properties;
mod real_data;
