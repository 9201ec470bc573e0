//! The chat's request parser: any action and any JSON either parse into a request that keeps
//! the documented rules, or are refused with a documented error code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::apps::chat::ChatConfig;
use switchboard::apps::chat::protocol::{self, Request};

fuzz_target!(|input: (&str, &str)| {
    let (action, body) = input;
    let Ok(json) = serde_json::from_str::<serde_json::Value>(body) else {
        return;
    };
    let config = ChatConfig::default();
    for action in [action, "join", "send", "history", "leave", "nick", "who", "react", "rooms"] {
        match protocol::parse(action, &json, &config) {
            Ok(Request::Send { text, .. }) => {
                assert!(text.chars().count() <= config.max_text_chars);
            }
            Ok(_) => {}
            Err(error) => {
                // Every refusal renders as a valid error frame.
                let frame = error.frame(action, None);
                assert!(!frame.bytes().is_empty());
            }
        }
    }
});
