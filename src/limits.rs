//! The open-file limit of `pki serve`: every connection holds a descriptor, so the cap on
//! connections must fit under it, with room for the database, the key store and the listeners.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Descriptors kept for everything but HTTP connections.
pub const RESERVED_FILES: u64 = 256;

/// Raises the soft limit on open files so that `wanted` connections fit (up to the hard limit),
/// and returns how many connections fit: `wanted`, or fewer (with a warning) when the hard limit
/// does not allow them.
pub fn fit_open_files(wanted: usize) -> usize {
    let need = wanted as u64 + RESERVED_FILES;
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= need {
        return wanted;
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let target = need.min(hard);
    let soft = match setrlimit(Resource::Nofile, Rlimit { current: Some(target), maximum: limit.maximum }) {
        Ok(()) => target,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the limit on open files");
            soft
        }
    };
    let fits = usize::try_from(soft.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX).min(wanted).max(1);
    if fits < wanted {
        tracing::warn!(
            open_files = soft,
            max_connections = fits,
            "server.max_connections = {wanted} does not fit under the limit on open files: lowered"
        );
    }
    fits
}
