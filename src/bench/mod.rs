//! Benchmarks, kept out of the daemon's code: `measure` times signing on the token alone
//! and through the daemon's socket, the same way so the two compare; [`floor`] serves
//! the daemon's router with the null signer, so that what a request costs without a
//! token can be measured with the same client.

pub mod floor;
mod measure;

pub use measure::{
    daemon, sample_authn_request, sample_envelope, sample_input, token, BenchResult, Endpoint,
};
