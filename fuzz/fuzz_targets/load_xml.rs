//! XML input to the snapshot reader: the raw IAM query-API
//! `GetAccountAuthorizationDetailsResponse` (quick-xml, the element-to-JSON
//! mapping, URL-encoded policy documents), checked by the canonical round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    permdrift_fuzz::load_and_check("fuzz.xml", data);
});
