//! The commits of single messages ([`crate::Sealer::commit`]), in batches on a thread of
//! their own.
//!
//! A message is handed out only once its timestamp's record at the TSA is durable and its audit
//! entry is written durably. Made one by one on the HTTP workers, each message used to wait for
//! both on a blocking thread of its own: a hand-off to that thread and back, a wait on the TSA's
//! committer, and an audit write with a storage flush of its own, shared only with the writes
//! that happened to arrive during the one before. Here one thread takes every message made while
//! it was busy, waits for their timestamps (one durable write of the TSA covers most of them),
//! writes all their audit entries in one storage write with one flush, and only then answers each
//! waiting request. A batch is never delayed to gather more: it is whatever arrived meanwhile.
//!
//! The same thread records what became of single messages asked to be delivered, once the relay
//! has answered ([`Committer::record_delivery`]): their entries, too, are written together.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::seal::{DeliveryRecord, Made, MailAudit, SealRecord, Sealed};
use crate::Error;

/// The most messages one batch writes (a bound on one storage write, far above what a server's
/// connections have in flight).
const MAX_BATCH: usize = 1_000;

enum Job {
    /// A message made, to be answered once its records are durable.
    Made { made: Made, reply: oneshot::Sender<Result<Sealed, Error>> },
    /// What became of a message asked to be delivered.
    Delivered { record: DeliveryRecord, reply: oneshot::Sender<Result<(), Error>> },
}

/// The queue of made messages and the thread that commits them.
pub(crate) struct Committer {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

impl Committer {
    /// Starts the thread `mail-commit`, which writes to `audit`; it ends when the committer is
    /// dropped.
    pub(crate) fn start(audit: Arc<dyn MailAudit>) -> Result<Self, Error> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("mail-commit".into())
            .spawn(move || run(&queue, &*audit))
            .map_err(|e| Error::Internal(format!("cannot start the mail committer: {e}")))?;
        Ok(Committer { jobs })
    }

    /// `made`'s message once its records are durable; the error of its timestamp's record or
    /// of the audit write otherwise.
    pub(crate) async fn commit(&self, made: Made) -> Result<Sealed, Error> {
        self.ask(|reply| Job::Made { made, reply }, "message").await
    }

    /// Once `record` is written durably; the audit write's error otherwise.
    pub(crate) async fn record_delivery(&self, record: DeliveryRecord) -> Result<(), Error> {
        self.ask(|reply| Job::Delivered { record, reply }, "delivery").await
    }

    /// The answer to the job `job` makes of its reply channel; `what` names it in errors.
    async fn ask<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Job,
        what: &str,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(job(reply)).map_err(|_| Error::Internal("the mail committer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal(format!("the mail committer failed on this {what}'s batch")))?
    }
}

fn run(queue: &mpsc::Receiver<Job>, audit: &dyn MailAudit) {
    while let Ok(first) = queue.recv() {
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        batch.extend(queue.try_iter().take(MAX_BATCH - 1));
        let n = batch.len();
        // A panic drops the batch's reply senders, so each of its requests gets an error
        // instead of waiting for ever; the next batch is committed as usual.
        if std::panic::catch_unwind(AssertUnwindSafe(|| commit_batch(audit, batch))).is_err() {
            tracing::error!(messages = n, "the mail committer failed on a batch; its messages were refused");
        }
    }
}

fn commit_batch(audit: &dyn MailAudit, batch: Vec<Job>) {
    let mut records: Vec<SealRecord> = Vec::with_capacity(batch.len());
    let mut waiting = Vec::with_capacity(batch.len());
    let mut deliveries: Vec<DeliveryRecord> = Vec::new();
    let mut delivered = Vec::new();
    for job in batch {
        let (made, reply) = match job {
            Job::Made { made, reply } => (made, reply),
            Job::Delivered { record, reply } => {
                deliveries.push(record);
                delivered.push(reply);
                continue;
            }
        };
        let (sealed, record, on_disk) = made.into_parts();
        match on_disk.map_or(Ok(()), |wait| wait()) {
            Ok(()) => {
                records.push(record);
                waiting.push((sealed, reply));
            }
            // The receiver may have gone (its client hung up): nothing is left to tell.
            Err(e) => drop(reply.send(Err(e))),
        }
    }
    if !deliveries.is_empty() {
        let written = audit.record_deliveries(&deliveries).map_err(|e| e.to_string());
        if let Err(why) = &written {
            tracing::error!(error = %why, messages = deliveries.len(), "the audit entries of deliveries could not be written");
        }
        for reply in delivered {
            drop(
                reply.send(
                    written.clone().map_err(|why| {
                        Error::Internal(format!("the audit entry could not be written: {why}"))
                    }),
                ),
            );
        }
    }
    if records.is_empty() {
        return;
    }
    match audit.record_all(&records) {
        Ok(()) => {
            for (sealed, reply) in waiting {
                drop(reply.send(Ok(sealed)));
            }
        }
        Err(e) => {
            let why = e.to_string();
            tracing::error!(error = %why, messages = waiting.len(), "the audit entries of sealed messages could not be written");
            for (_, reply) in waiting {
                drop(
                    reply.send(Err(Error::Internal(format!("the audit entry could not be written: {why}")))),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::MessageKind;
    use cerdb::EmailAddress;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Records what it is given; fails or panics for a message id it is told to.
    #[derive(Default)]
    struct Ledger {
        written: Mutex<Vec<String>>,
        delivered: Mutex<Vec<String>>,
        writes: AtomicUsize,
    }

    impl MailAudit for Ledger {
        fn record(&self, rec: &SealRecord) -> Result<(), Error> {
            self.record_all(std::slice::from_ref(rec))
        }

        fn record_all(&self, recs: &[SealRecord]) -> Result<(), Error> {
            if recs.iter().any(|r| r.message_id == "panic") {
                panic!("an audit write that panics");
            }
            if recs.iter().any(|r| r.message_id == "refuse") {
                return Err(Error::Internal("the store is read-only".into()));
            }
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.written.lock().unwrap().extend(recs.iter().map(|r| r.message_id.clone()));
            Ok(())
        }

        fn record_deliveries(&self, recs: &[DeliveryRecord]) -> Result<(), Error> {
            if recs.iter().any(|r| r.message_id == "refuse") {
                return Err(Error::Internal("the store is read-only".into()));
            }
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.delivered.lock().unwrap().extend(recs.iter().map(|r| r.message_id.clone()));
            Ok(())
        }
    }

    fn made(id: &str, on_disk: Option<crate::OnDisk>) -> Made {
        let from: EmailAddress = "statements@bank.example".parse().unwrap();
        let sealed = Sealed {
            message: id.as_bytes().to_vec(),
            message_id: id.into(),
            kind: MessageKind::Sealed,
            certificate_serial: None,
            timestamp_serial: None,
            from,
        };
        let record = SealRecord {
            api_key: "k".into(),
            sender: "statements".into(),
            recipient_hash: "00".into(),
            certificate_serial: None,
            message_id: id.into(),
            timestamp_serial: None,
            kind: MessageKind::Sealed,
        };
        Made::from_parts(sealed, record, on_disk)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        actix_web::rt::System::new().block_on(f)
    }

    /// And each delivery recorded then, on the same thread, is answered once its entry is
    /// written.
    #[test]
    fn concurrent_messages_are_each_answered_with_their_own_message_after_their_entry_is_written() {
        let ledger = Arc::new(Ledger::default());
        let c = Arc::new(Committer::start(ledger.clone()).unwrap());
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let c = c.clone();
                std::thread::spawn(move || {
                    let id = format!("m{i}");
                    let sealed = block_on(c.commit(made(&id, None))).unwrap();
                    assert_eq!(sealed.message, id.as_bytes());
                    block_on(c.record_delivery(delivery(&id))).unwrap();
                    id
                })
            })
            .collect();
        let mut ids: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let mut written = ledger.written.lock().unwrap().clone();
        let mut delivered = ledger.delivered.lock().unwrap().clone();
        ids.sort();
        written.sort();
        delivered.sort();
        assert_eq!(written, ids, "every message answered has its entry, and only once");
        assert_eq!(delivered, ids, "every delivery answered has its entry, and only once");
        assert!(ledger.writes.load(Ordering::SeqCst) <= 64);
    }

    #[test]
    fn a_timestamp_that_did_not_reach_disk_refuses_its_message_and_writes_no_entry_for_it() {
        let ledger = Arc::new(Ledger::default());
        let c = Committer::start(ledger.clone()).unwrap();
        let failed: crate::OnDisk = Box::new(|| Err(Error::Internal("the TSA's ledger is full".into())));
        let e = block_on(c.commit(made("lost", Some(failed)))).unwrap_err();
        assert!(e.to_string().contains("ledger is full"), "{e}");
        let ok = block_on(c.commit(made("kept", Some(Box::new(|| Ok(())))))).unwrap();
        assert_eq!(ok.message_id, "kept");
        assert_eq!(*ledger.written.lock().unwrap(), vec!["kept".to_string()]);
    }

    #[test]
    fn a_failed_or_panicking_audit_write_refuses_its_messages_and_the_next_ones_still_commit() {
        let ledger = Arc::new(Ledger::default());
        let c = Committer::start(ledger.clone()).unwrap();
        let e = block_on(c.commit(made("refuse", None))).unwrap_err();
        assert!(e.to_string().contains("audit entry could not be written: the store is read-only"), "{e}");
        let e = block_on(c.commit(made("panic", None))).unwrap_err();
        assert!(e.to_string().contains("committer failed on this message's batch"), "{e}");
        let ok = block_on(c.commit(made("after", None))).unwrap();
        assert_eq!(ok.message_id, "after");
        assert_eq!(*ledger.written.lock().unwrap(), vec!["after".to_string()]);

        let e = block_on(c.record_delivery(delivery("refuse"))).unwrap_err();
        assert!(e.to_string().contains("audit entry could not be written: the store is read-only"), "{e}");
        block_on(c.record_delivery(delivery("after"))).unwrap();
        assert_eq!(*ledger.delivered.lock().unwrap(), vec!["after".to_string()]);
    }

    fn delivery(id: &str) -> DeliveryRecord {
        let to: EmailAddress = "alice@example.com".parse().unwrap();
        DeliveryRecord::new("k", id, &to, &Ok(format!("Q-{id}")))
    }
}
