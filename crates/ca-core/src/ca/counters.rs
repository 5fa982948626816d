//! What this process's CA did since it started, for the operator's metrics: certificates issued
//! and revoked, by kind. Plain counters: the binary reads them when it is scraped.

use std::collections::BTreeMap;

use super::*;

/// Counts by certificate kind.
#[derive(Debug, Default)]
pub(super) struct Counters {
    issued: Mutex<BTreeMap<&'static str, u64>>,
    revoked: Mutex<BTreeMap<&'static str, u64>>,
}

impl Counters {
    pub(super) fn issued<'a>(&self, records: impl IntoIterator<Item = &'a CertRecord>) {
        let mut m = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        for r in records {
            *m.entry(r.kind.name()).or_default() += 1;
        }
    }

    pub(super) fn revoked(&self, kind: CertKind) {
        *self.revoked.lock().unwrap_or_else(|p| p.into_inner()).entry(kind.name()).or_default() += 1;
    }
}

impl Ca {
    /// Certificates issued by this process since it started, by kind (`signing`, ...).
    pub fn issued_counts(&self) -> BTreeMap<&'static str, u64> {
        self.counters.issued.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Certificates revoked by this process since it started, by kind.
    pub fn revoked_counts(&self) -> BTreeMap<&'static str, u64> {
        self.counters.revoked.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
