//! The web UI: a small single-page app (plain HTML, CSS and JavaScript, no build
//! step) compiled into the binary and served at `/`. It speaks only the public API,
//! as any other client does; the gateway gives it nothing else.
//!
//! Served with a strict Content-Security-Policy: scripts, styles and requests from
//! this origin only, no inline script, no framing. The app builds every page with DOM
//! calls and `textContent`, never by parsing strings as HTML.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::State;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// The UI's files: path, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../ui/index.html"),
    ),
    (
        "/ui/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/app.js"),
    ),
    (
        "/ui/style.css",
        "text/css; charset=utf-8",
        include_str!("../ui/style.css"),
    ),
    (
        "/ui/icon.svg",
        "image/svg+xml",
        include_str!("../ui/icon.svg"),
    ),
];

/// The UI's routes, to be merged into the public router. They are public: the
/// pages themselves hold no data; what they show comes from API calls that carry
/// the user's token.
pub(crate) fn routes() -> Router<State> {
    FILES
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { file(content_type, body) }))
        })
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change with the binary: always revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_served() {
        let index = FILES[0].2;
        for needed in ["/ui/app.js", "/ui/style.css", "/ui/icon.svg"] {
            assert!(index.contains(needed), "index.html does not load {needed}");
            assert!(
                FILES.iter().any(|(path, _, _)| *path == needed),
                "{needed} is not served"
            );
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let index = FILES[0].2;
        assert!(
            !index.contains("<script>"),
            "inline script: the CSP forbids it"
        );
        assert!(
            !index.contains("<style"),
            "inline style: the CSP forbids it"
        );
        assert!(
            !index.contains(" style="),
            "inline style: the CSP forbids it"
        );
        assert!(
            !index.contains("onclick"),
            "inline handler: the CSP forbids it"
        );
    }

    #[test]
    fn the_app_never_parses_strings_as_html() {
        let app = FILES[1].2;
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!app.contains(sink), "app.js uses {sink}");
        }
    }
}
