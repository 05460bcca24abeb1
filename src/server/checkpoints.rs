//! The thread that signs the audit chain's head every `[audit] checkpoint_interval_s`
//! and once more at shutdown (see [`crate::audit::checkpoint`]), and exports each head to
//! the journal, where a cut of the log's last lines can be checked against it.

use std::time::Duration;

use crate::audit::{checkpoint, AuditLog};
use crate::signer::{KeySigner, Signer};

/// The running checkpoint thread.
pub struct Checkpoints {
    stop: crossbeam_channel::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpoints {
    /// Starts signing checkpoints with the key labelled `label`.
    pub fn start(audit: AuditLog, signer: Signer, label: String, interval: Duration) -> Self {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("audit-checkpoint".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(interval)
                {
                    write(&audit, &signer, &label, interval, "interval");
                }
                write(&audit, &signer, &label, interval, "shutdown");
            })
            .expect("spawning the checkpoint thread");
        Self { stop, thread }
    }

    /// Writes the shutdown checkpoint and stops, waiting at most 3 s for it: a token call
    /// slower than that is left behind (logged), and the daemon exits without it.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while !self.thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        } else {
            tracing::error!("the shutdown checkpoint did not finish in time");
        }
    }
}

/// Signs and appends one checkpoint; a failure is logged (the next one tries again).
pub fn write(audit: &AuditLog, signer: &Signer, label: &str, interval: Duration, reason: &str) {
    let written = audit.record_at_head(|seq, prev| {
        let made = checkpoint::record(seq + 1, prev, label, interval, reason, |digest| {
            signer
                .sign_now(label, checkpoint::ALGORITHM, digest)
                .map(|signed| (signed.signature, signed.key.cert_sha256.clone()))
        });
        match made {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::error!(error = %e, label, "cannot sign an audit checkpoint");
                None
            }
        }
    });
    match written {
        Ok(()) => {
            let (seq, head) = audit.head();
            tracing::info!(target: "hsm_signer::audit", seq, %head, reason, "audit checkpoint");
        }
        Err(e) => tracing::error!(error = %e, "cannot write an audit checkpoint"),
    }
}
