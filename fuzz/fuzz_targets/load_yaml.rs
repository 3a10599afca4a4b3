//! YAML input to the snapshot reader: multi-document manifests, `kubectl get
//! -o yaml` lists, permdrift YAML snapshots (document splitting, the flow
//! nesting guard, serde_yaml), checked by the canonical round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    permdrift_fuzz::load_and_check("fuzz.yaml", data);
});
