//! IAM policy documents (`model::iam_policy`): decoding as found in inputs
//! (URL-encoded, form-encoded, JSON text), parsing into statements, and the
//! normal form change detection compares. Checks: the normal form is
//! idempotent, normalising never turns a valid document invalid, and a
//! decoded document survives being URL-encoded and decoded again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use permdrift::model::iam_policy::{decode_document, normalize_document, parse_document};
use serde_json::Value;

fn check(doc: &Value) {
    let parsed = parse_document(doc);
    let normal = normalize_document(doc);
    assert_eq!(
        normalize_document(&normal),
        normal,
        "normal form is not idempotent"
    );
    if parsed.is_ok()
        && let Err(e) = parse_document(&normal)
    {
        panic!("a valid document's normal form is invalid: {e}\n{normal}");
    }
    let text = doc.to_string();
    let encoded = percent_encoding::utf8_percent_encode(&text, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    match decode_document(&Value::String(encoded)) {
        Ok(again) => assert_eq!(&again, doc, "URL-encoded round trip changed the document"),
        Err(e) => panic!("URL-encoded document does not decode: {e}\n{text}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(doc) = decode_document(&Value::String(text.to_owned())) {
        check(&doc);
    }
});
