//! Behaviour every backend must show. Each backend's module implements [`Harness`] and
//! calls `conformance_tests!` to get one `#[tokio::test]` per case.
