//! The journal reader (`store::record`): one line through `parse_line` and a
//! whole journal through `scan`. Checks: a parsed record whose hash matches
//! its fields writes back (`record_line`) to a line that parses to the same
//! record; `scan` keeps a prefix that ends at a line end, with records
//! numbered from 1, and scanning that prefix alone gives the same records
//! and no torn tail.
#![no_main]

use libfuzzer_sys::fuzz_target;
use permdrift::store::record::{parse_line, record_hash, record_line, scan};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = parse_line(data)
        && record_hash(&record) == record.hash
    {
        let line = record_line(&record);
        assert_eq!(
            parse_line(line.as_bytes()),
            Ok(record),
            "a record does not read back from its own line"
        );
    }
    let whole = scan(data);
    let good = usize::try_from(whole.good_len).unwrap_or(usize::MAX);
    assert!(good <= data.len(), "good prefix longer than the input");
    let prefix = &data[..good];
    assert!(
        prefix.is_empty() || prefix.ends_with(b"\n"),
        "good prefix does not end at a line end"
    );
    for (i, record) in whole.records.iter().enumerate() {
        assert_eq!(record.seq, i as u64 + 1, "records out of sequence");
    }
    let again = scan(prefix);
    assert_eq!(
        again.records, whole.records,
        "the good prefix reads differently"
    );
    assert!(again.tail.is_none(), "the good prefix has a torn tail");
});
