//! `GET /v1/openapi.yaml`: the API's own description.
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

pub(super) async fn get() -> Response {
    let mut r = crate::serve::openapi::DOCUMENT.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    r
}
