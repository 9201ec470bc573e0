//! Route selection: any expression either parses or is refused; any parsed expression
//! evaluates any frame without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::api::SelectionExpression;

fuzz_target!(|input: (&str, &str)| {
    let (expression, body) = input;
    if let Ok(parsed) = SelectionExpression::parse(expression) {
        let _ = parsed.evaluate(body);
    }
    // The default expression against arbitrary frames.
    let _ = SelectionExpression::default().evaluate(body);
});
