//! JSON input to the snapshot reader: `kubectl get -o json` lists and
//! objects, JSON streams, permdrift JSON snapshots. Beyond the round trip,
//! the snapshot fast path (`format::from_json`, which reads objects as raw
//! text) must agree with the general path whenever it accepts a text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use permdrift::snapshot::format::{self, Format};

fuzz_target!(|data: &[u8]| {
    permdrift_fuzz::load_and_check("fuzz.json", data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(fast) = format::from_json(text) {
        let general = serde_json::from_str(text)
            .map_err(|e| e.to_string())
            .and_then(|v| format::from_value(v).map_err(|e| e.to_string()));
        match general {
            // As values: the fast path keeps each object's text, key order
            // included (see docs/fuzzing.md, "Findings").
            Ok(general) => assert_eq!(
                permdrift_fuzz::as_value(&permdrift_fuzz::render(&fast, Format::Json)),
                permdrift_fuzz::as_value(&permdrift_fuzz::render(&general, Format::Json)),
                "fast and general snapshot paths disagree"
            ),
            Err(e) => panic!("fast path accepted a snapshot the general path refuses: {e}"),
        }
    }
});
