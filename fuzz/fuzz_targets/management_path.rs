//! The `@connections` path parser: any path classifies without panicking, and a connection
//! target always holds a well-formed id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::Id;
use switchboard::management::{Target, parse_path};

fuzz_target!(|path: &str| {
    if let Target::Connection(Ok(id)) = parse_path(path, "dev") {
        assert_eq!(Id::parse(id.as_str()), Some(id));
    }
});
