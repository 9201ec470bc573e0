//! Route selection: parsing a frame's JSON and evaluating the selection expression, per frame.
#![allow(
    missing_docs,
    reason = "criterion_main! generates an undocumented main"
)]

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use serde_json::Value;
use switchboard::api::SelectionExpression;

const FRAME: &str = r#"{"action":"sendmessage","message":"~00000000000f4240000000017xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;

fn selection(c: &mut Criterion) {
    let default = SelectionExpression::default();
    let nested = SelectionExpression::parse("${request.body.service.do}/${request.body.action}")
        .expect("a valid expression");
    let json: Value = serde_json::from_str(FRAME).expect("valid JSON");

    c.bench_function("selection/parse_json_and_evaluate_action", |b| {
        b.iter(|| default.evaluate(black_box(FRAME)).map(|k| k.len()))
    });
    c.bench_function("selection/evaluate_action_on_parsed_json", |b| {
        b.iter(|| default.evaluate_json(black_box(&json)))
    });
    c.bench_function("selection/evaluate_two_variables_on_parsed_json", |b| {
        b.iter(|| nested.evaluate_json(black_box(&json)))
    });
    c.bench_function("selection/parse_expression", |b| {
        b.iter(|| SelectionExpression::parse(black_box("${request.body.a}/${request.body.b}")))
    });
}

criterion_group!(benches, selection);
criterion_main!(benches);
