//! Client scripts Crier serves itself, compiled into the binary: `/js/crier-resume.js`
//! (a classic script, also loadable with CommonJS `require`) and `/js/crier-resume.mjs`
//! (the same code as an ES module). The add-on gives stock pusher-js loss-free resume:
//! see `assets/js/crier-resume.core.js`.
//!
//! Both are built at compile time from one source, so they cannot drift apart. They are
//! public, static and hold no secret, so any origin may load them (an ES module from
//! another origin needs CORS).

use crate::state::AppState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// The classic script: the core wrapped so that it patches `window.Pusher` in a page and
/// exports the function under CommonJS.
pub const RESUME_JS: &str = concat!(
    include_str!("../assets/js/crier-resume.head.js"),
    include_str!("../assets/js/crier-resume.core.js"),
    include_str!("../assets/js/crier-resume.tail.js"),
);

/// The ES module: the core plus `export` lines.
pub const RESUME_MJS: &str = concat!(
    include_str!("../assets/js/crier-resume.mjs.head.js"),
    include_str!("../assets/js/crier-resume.core.js"),
    include_str!("../assets/js/crier-resume.mjs.tail.js"),
);

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/js/crier-resume.js", get(|| async { script(RESUME_JS) }))
        .route("/js/crier-resume.mjs", get(|| async { script(RESUME_MJS) }))
}

fn script(body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            // Short: a new Crier version's script reaches browsers within minutes.
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_carry_the_same_core() {
        let core = include_str!("../assets/js/crier-resume.core.js");
        assert!(RESUME_JS.contains(core) && RESUME_MJS.contains(core));
        assert!(RESUME_JS.contains("module.exports = crierResume"));
        assert!(RESUME_MJS.ends_with("export default crierResume;\n"));
    }

    #[tokio::test]
    async fn scripts_are_javascript_for_any_origin() {
        let response = script(RESUME_MJS).into_response();
        let headers = response.headers();
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a static body");
        assert_eq!(body, RESUME_MJS.as_bytes());
    }
}
