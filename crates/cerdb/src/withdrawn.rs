//! The issuing CAs withdrawn from use in this process: the S/MIME issuing CA once `pki ca
//! compromise --ca issuing` revoked it (cACompromise), here or on another node. The CA sets it when
//! it reads or makes a compromise; the directory, LDAP and sealed mail read it on every answer and
//! then count no certificate that CA issued as valid, so no client is handed a certificate whose
//! chain relying parties refuse. Shared by every clone of one [`crate::CertDb`].

use std::sync::atomic::{AtomicBool, Ordering};

use crate::CaId;

/// Which issuers are withdrawn (the root never is: it cannot be compromised through the CA).
#[derive(Debug, Default)]
pub struct WithdrawnIssuers {
    issuing: AtomicBool,
}

impl WithdrawnIssuers {
    /// Records whether `ca` is withdrawn.
    pub fn set(&self, ca: CaId, withdrawn: bool) {
        match ca {
            CaId::Issuing => self.issuing.store(withdrawn, Ordering::Release),
            CaId::Root => {}
        }
    }

    /// Whether certificates `ca` issued are to be treated as not valid.
    pub fn is_withdrawn(&self, ca: CaId) -> bool {
        match ca {
            CaId::Issuing => self.issuing.load(Ordering::Acquire),
            CaId::Root => false,
        }
    }
}
