//! Fakes shared by the tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{Request, Response, StatusCode};
use bytes::Bytes;

/// Counts calls that reached a fake.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicUsize>);

impl Counter {
    pub fn hit(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn answer(status: u16) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(b"{}"));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
}

pub fn get(path: &str) -> Request<Bytes> {
    request("GET", path)
}

pub fn request(method: &str, path: &str) -> Request<Bytes> {
    Request::builder()
        .method(method)
        .uri(format!("http://target.test{path}"))
        .body(Bytes::new())
        .unwrap()
}
