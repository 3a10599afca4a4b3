//! `aws iam get-account-authorization-details` JSON output, through the file
//! reader and through `input::account_source` (what a live AWS source feeds
//! each account's pages into). A document the live path accepts must be
//! readable as a file too, and what either accepts must survive the
//! canonical round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use permdrift::input::{InputOptions, account_source};
use permdrift::snapshot::Snapshot;
use permdrift::snapshot::format;

fuzz_target!(|data: &[u8]| {
    let from_file = permdrift_fuzz::load("fuzz.json", data);
    if let Ok(snapshot) = &from_file {
        permdrift_fuzz::check_round_trip(snapshot);
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(source) = account_source("123456789012", &value, InputOptions::default()) {
        // A snapshot document is read as one first, whatever else it holds.
        if !format::is_snapshot(&value)
            && let Err(e) = &from_file
        {
            panic!("the live path accepts a document the file reader refuses: {e}");
        }
        let mut snapshot = Snapshot::new();
        snapshot.sources.insert(source.name.clone(), source);
        permdrift_fuzz::check_round_trip(&snapshot);
    }
});
