//! The operator's configuration file (`permdrift run --config`): YAML,
//! serde_path_to_error, durations and the validation rules. Any text must
//! give a config or a `ConfigError` naming the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use permdrift::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Durations appear deep in a config; the parser is also tried on the
    // text alone so the fuzzer need not build a whole valid file first.
    let _ = permdrift::config::parse_duration(text);
    match Config::parse("fuzz.yaml", text) {
        Ok(_) => {}
        Err(ConfigError::Syntax { file, .. } | ConfigError::Field { file, .. }) => {
            assert_eq!(file, "fuzz.yaml", "config error does not name its file");
        }
    }
});
