//! Checks shared by the fuzz targets in `fuzz_targets/`.
//!
//! Bytes from libFuzzer go through the same reader `permdrift snapshot
//! --from` and `permdrift diff` use ([`permdrift::input::Loader`]); whatever it
//! accepts must survive the canonical round trip: rendered as JSON and as
//! YAML, read back, rendered again, the text is the same. A panic here is a
//! finding; an error returned by a reader is the expected answer to bad input.

use permdrift::input::{InputError, InputOptions, Loader};
use permdrift::snapshot::Snapshot;
use permdrift::snapshot::format::{self, Format};

/// Reads one file's bytes the way `--from FILE` does (`name` only shows in messages).
pub fn load(name: &str, bytes: &[u8]) -> Result<Snapshot, InputError> {
    let mut loader = Loader::new(InputOptions::default());
    loader.add_bytes(name, bytes)?;
    loader.finish().map(|(snapshot, _)| snapshot)
}

/// Canonical JSON of a snapshot the readers produced; every such snapshot must render.
pub fn render(snapshot: &Snapshot, format: Format) -> String {
    match format::to_string(snapshot, format) {
        Ok(text) => text,
        Err(e) => panic!("a snapshot that was read does not render as {format:?}: {e}"),
    }
}

/// Reads back text permdrift wrote; it must be readable.
fn reload(name: &str, text: &str) -> Snapshot {
    match load(name, text.as_bytes()) {
        Ok(snapshot) => snapshot,
        Err(e) => panic!("permdrift cannot read what it wrote: {e}\n--- {name}\n{text}"),
    }
}

/// The canonical round trip: JSON and YAML renderings read back to the same
/// snapshot (compared through its canonical JSON), and the JSON fast path
/// takes permdrift's own JSON and agrees with the general path.
pub fn check_round_trip(snapshot: &Snapshot) {
    let json = render(snapshot, Format::Json);
    assert_eq!(
        render(&reload("rendered.json", &json), Format::Json),
        json,
        "JSON rendering changed after a round trip"
    );
    // Compared as values: a Kubernetes object read from compact JSON keeps
    // its text, key order included, while one read from YAML is written with
    // sorted keys (the known gap in docs/fuzzing.md, "Findings").
    let yaml = render(snapshot, Format::Yaml);
    let from_yaml = render(&reload("rendered.yaml", &yaml), Format::Json);
    assert_eq!(
        as_value(&from_yaml),
        as_value(&json),
        "YAML rendering read back to a different snapshot\n--- YAML\n{yaml}"
    );
    match format::from_json(&json) {
        Some(fast) => assert_eq!(
            render(&fast, Format::Json),
            json,
            "the JSON fast path read permdrift's own JSON differently"
        ),
        None => panic!("the JSON fast path refused permdrift's own JSON\n{json}"),
    }
}

/// Parsed JSON, for comparing texts that may differ in key order only.
pub fn as_value(json: &str) -> serde_json::Value {
    match serde_json::from_str(json) {
        Ok(value) => value,
        Err(e) => panic!("permdrift wrote JSON that does not parse: {e}\n{json}"),
    }
}

/// Reads the bytes; when they are accepted, checks the round trip.
pub fn load_and_check(name: &str, bytes: &[u8]) {
    if let Ok(snapshot) = load(name, bytes) {
        check_round_trip(&snapshot);
    }
}
