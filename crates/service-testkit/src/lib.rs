//! One harness for the services' integration tests, in zero-to-production's
//! `spawn_app` style, so that a service's `tests/it/support.rs` keeps only what is its
//! own (its config, its fixtures, its domain helpers):
//!
//! - [`TestEnv`]: what outlives restarts of the service under test: its store on the
//!   chosen [`Backend`] (a SQLite file, or a fresh PostgreSQL database: a loud skip when
//!   PostgreSQL is unreachable, a failure under `AGORA_REQUIRE_SERVERS=1`), an embedded
//!   bus with the streams it needs, a token issuer and the internal plane's key; it
//!   publishes events, reads what the service published and waits for its consumers;
//! - [`http`]: one request through a router ([`http::call`], [`http::send`]), its
//!   [`http::Answer`], and what a problem answer must look like
//!   ([`http::Answer::assert_problem`]);
//! - [`eventually`]: polls a condition until it holds, with a deadline;
//! - [`TEST_PLANE`] and [`service_token`]: the internal plane's key of every service a
//!   test process starts, and the service tokens one service sends another.
//!
//! What it must never do: sleep to wait for something (it polls with a deadline),
//! reach beyond 127.0.0.1, or be anything but a dev-dependency.

#![forbid(unsafe_code)]

mod env;
mod events;
pub mod http;

/// The shipping address the services' fixtures use: Unter den Linden 1, 10117 Berlin.
pub fn address() -> agora_contracts::Address {
    agora_contracts::Address {
        line1: "Unter den Linden 1".into(),
        line2: None,
        city: "Berlin".into(),
        postal_code: "10117".into(),
        country: "DE".into(),
    }
}

pub use agora_testkit::{Backend, on_both_backends};

/// `Deref<Target = TestEnv>` for a service's own `Env` that wraps one: `env_deref!(Env)`
/// for `struct Env(TestEnv)`, `env_deref!(Env.app)` for a field `app: TestEnv`, so that
/// `env.bus`, `env.issuer`, `env.publish(…)` reach the shared part.
#[macro_export]
macro_rules! env_deref {
    ($env:ident) => {
        $crate::env_deref!($env.0);
    };
    ($env:ident . $field:tt) => {
        impl ::std::ops::Deref for $env {
            type Target = $crate::TestEnv;
            fn deref(&self) -> &$crate::TestEnv {
                &self.$field
            }
        }
    };
}
pub use env::{TEST_PLANE, TestEnv, outbox_published, service_token};
pub use events::{EVENTUALLY, EventReader, eventually};
