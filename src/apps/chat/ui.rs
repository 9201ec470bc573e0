//! The browser UI: three static files compiled into the binary, served at `/` and `/ui/`.
//!
//! No build step: the page is plain HTML, CSS and JavaScript. The page learns the stage (the
//! WebSocket path) from a `<meta>` tag filled in when it is served. Every response forbids
//! inline scripts and foreign hosts (`Content-Security-Policy`), a second line of defence
//! behind the page's rule of inserting user text only as text.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

/// The policy every UI response carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One UI file, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its content.
    pub body: String,
}

/// The UI file at `path`, for a gateway whose stage is `stage`.
pub fn asset(path: &str, stage: &str) -> Option<Asset> {
    let (content_type, body) = match path {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            // Stage names are letters, digits, `-` and `_`: safe inside an attribute.
            INDEX.replace("{{STAGE}}", stage),
        ),
        "/ui/app.js" => ("text/javascript; charset=utf-8", SCRIPT.to_owned()),
        "/ui/style.css" => ("text/css; charset=utf-8", STYLE.to_owned()),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

impl IntoResponse for Asset {
    fn into_response(self) -> Response {
        let mut response = self.body.into_response();
        let headers = response.headers_mut();
        let set = [
            (header::CONTENT_TYPE, self.content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ];
        for (name, value) in set {
            headers.insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_knows_its_stage_and_loads_only_its_own_files() {
        let page = asset("/", "prod").unwrap();
        assert!(page.body.contains(r#"content="prod""#));
        assert!(!page.body.contains("{{"));
        assert!(!page.body.contains("<script>"), "no inline script");
        assert!(asset("/ui/app.js", "dev").is_some());
        assert!(asset("/ui/style.css", "dev").is_some());
        assert!(asset("/ui/other.js", "dev").is_none());
    }
}
