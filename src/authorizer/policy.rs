//! IAM policy documents returned by REQUEST authorizers: does a policy allow the method ARN?
//!
//! As IAM evaluates them: an explicit `Deny` that matches wins; otherwise an `Allow` that
//! matches allows; otherwise the request is denied. `Action` and `Resource` may be strings or
//! lists and may use the `*` and `?` wildcards (actions compare case-insensitively).

use serde_json::Value;

/// The outcome of evaluating a policy for one method ARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// An `Allow` statement covers the ARN and no `Deny` does.
    Allow,
    /// A `Deny` statement covers the ARN, or no statement does.
    Deny,
}

/// Evaluates `policy` (a `policyDocument`) for invoking `method_arn`.
pub(crate) fn evaluate(policy: &Value, method_arn: &str) -> Result<Decision, String> {
    let statements = match policy.get("Statement") {
        Some(Value::Array(list)) => list.iter().collect::<Vec<_>>(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => return Err("the policy document has no Statement".into()),
    };
    let mut allowed = false;
    for statement in statements {
        let effect = statement
            .get("Effect")
            .and_then(Value::as_str)
            .ok_or("a policy statement has no Effect")?;
        let covers = matches_any(statement.get("Action"), "execute-api:Invoke", true)
            && matches_any(statement.get("Resource"), method_arn, false);
        match (effect, covers) {
            (_, false) => {}
            ("Deny", true) => return Ok(Decision::Deny),
            ("Allow", true) => allowed = true,
            (other, true) => return Err(format!("unknown policy Effect {other:?}")),
        }
    }
    Ok(if allowed {
        Decision::Allow
    } else {
        Decision::Deny
    })
}

/// Whether `patterns` (a string or a list of strings) has one matching `value`.
fn matches_any(patterns: Option<&Value>, value: &str, ignore_case: bool) -> bool {
    let one = |p: &Value| {
        p.as_str().is_some_and(|p| {
            if ignore_case {
                wildcard(&p.to_ascii_lowercase(), &value.to_ascii_lowercase())
            } else {
                wildcard(p, value)
            }
        })
    };
    match patterns {
        Some(Value::Array(list)) => list.iter().any(one),
        Some(p) => one(p),
        None => false,
    }
}

/// IAM wildcard matching: `*` any run of characters, `?` one character.
pub(crate) fn wildcard(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:switchboard/dev/$connect";

    fn policy(effect: &str, resource: Value) -> Value {
        json!({"Version": "2012-10-17", "Statement": [
            {"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}
        ]})
    }

    #[test]
    fn allow_deny_and_not_covered() {
        assert_eq!(
            evaluate(&policy("Allow", json!(ARN)), ARN),
            Ok(Decision::Allow)
        );
        assert_eq!(
            evaluate(&policy("Allow", json!(["arn:aws:execute-api:*"])), ARN),
            Ok(Decision::Allow)
        );
        assert_eq!(
            evaluate(&policy("Deny", json!(ARN)), ARN),
            Ok(Decision::Deny)
        );
        assert_eq!(
            evaluate(
                &policy("Allow", json!("arn:aws:execute-api:*:*:other/*")),
                ARN
            ),
            Ok(Decision::Deny)
        );
        let both = json!({"Statement": [
            {"Action": "*", "Effect": "Allow", "Resource": "*"},
            {"Action": ["execute-api:*"], "Effect": "Deny", "Resource": "*/dev/*"}
        ]});
        assert_eq!(evaluate(&both, ARN), Ok(Decision::Deny));
        assert!(evaluate(&json!({}), ARN).is_err());
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("a*c", "abbbc"));
        assert!(wildcard("a?c", "abc"));
        assert!(!wildcard("a?c", "abbc"));
        assert!(wildcard("*", ""));
        assert!(!wildcard("abc", "abcd"));
        assert!(wildcard("*/$connect", "x/dev/$connect"));
    }
}
