//! A connection's byte stream as hyper sees it, with the two limits hyper does not keep:
//! a write that makes no progress for `write_timeout` fails (a client that never reads
//! its answers cannot hold the connection open), and a connection marked to linger
//! closes in stages, as RFC 9112 §9.6 and nginx's lingering_close do: after the answer,
//! shut the write side, then read and discard what the client still sends, for up to
//! [`LINGER_FOR`] or [`LINGER_BYTES`], before closing. A client that writes its body
//! after the headers (Python's http.client, Java) then reads the early answer instead
//! of failing with EPIPE on a socket already closed under it.
//!
//! It also keeps the connection's [`Activity`]: whether a request byte arrived since the
//! last response, and since when the connection has been idle, so that a caller at its
//! connection limit can have its oldest idle connection closed instead of being refused.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Sleep;

/// How long a connection must have been idle before it may be closed to admit another
/// connection of the same caller.
pub const IDLE_AFTER: Duration = Duration::from_secs(1);

/// What a connection is doing, shared by its stream, its responses and the admission.
#[derive(Debug)]
pub struct Activity {
    accepted: Instant,
    /// A request byte arrived and its response has not been handed to the stream yet.
    busy: AtomicBool,
    /// A write waits for the client to read.
    writing: AtomicBool,
    /// Milliseconds after `accepted` when the last response was handed to the stream.
    idle_since_ms: AtomicU64,
    close: Notify,
}

impl Activity {
    /// A connection accepted now, idle until its first request byte.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            accepted: Instant::now(),
            busy: AtomicBool::new(false),
            writing: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            close: Notify::new(),
        })
    }

    /// Since when the connection has been idle for at least [`IDLE_AFTER`] at `now`:
    /// no request byte since the last response was written, or since the accept, and no
    /// write waiting. `None` while a request is in flight or the idle time is shorter.
    pub fn idle_since(&self, now: Instant) -> Option<Instant> {
        if self.busy.load(Ordering::Acquire) || self.writing.load(Ordering::Acquire) {
            return None;
        }
        let since =
            self.accepted + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        (now.saturating_duration_since(since) >= IDLE_AFTER).then_some(since)
    }

    /// The response of the request in flight was handed over whole (hyper dropped its
    /// body after writing the last of it): idle from now. A request pipelined behind it
    /// and already read is not seen; the daemon's clients do not pipeline.
    pub fn responded(&self) {
        let ms = self.accepted.elapsed().as_millis() as u64;
        self.idle_since_ms.store(ms, Ordering::Release);
        self.busy.store(false, Ordering::Release);
    }

    /// What [`ConnIo`] notes when a request byte arrives.
    #[cfg(test)]
    pub fn read_a_request_byte(&self) {
        self.busy.store(true, Ordering::Release);
    }

    /// Asks the connection to close (it was idle, and its caller needs the slot).
    pub fn close(&self) {
        self.close.notify_one();
    }

    /// Resolves when [`Activity::close`] was called.
    pub async fn closing(&self) {
        self.close.notified().await;
    }
}

/// How long a lingering close keeps reading.
pub const LINGER_FOR: Duration = Duration::from_secs(2);
/// How much a lingering close reads and discards at most.
pub const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// The stream, with a write deadline and an optional lingering close.
pub struct ConnIo<S> {
    stream: S,
    write_timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    linger: Arc<AtomicBool>,
    lingering: Option<Lingering>,
    activity: Arc<Activity>,
}

impl<S> ConnIo<S> {
    /// Wraps `stream`; the close lingers if `linger` is true by the time hyper closes.
    /// Reads and writes are noted in `activity`.
    pub fn new(
        stream: S,
        write_timeout: Duration,
        linger: Arc<AtomicBool>,
        activity: Arc<Activity>,
    ) -> Self {
        Self {
            stream,
            write_timeout,
            stalled: None,
            linger,
            lingering: None,
            activity,
        }
    }

    /// Passes a write's result on; a write still pending `write_timeout` after the last
    /// progress fails with TimedOut, which ends the connection.
    fn deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        self.activity
            .writing
            .store(result.is_pending(), Ordering::Release);
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let timeout = self.write_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {} ms", timeout.as_millis()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.busy.store(true, Ordering::Release);
        }
        result
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.deadline(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.deadline(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_flush(cx);
        this.deadline(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.lingering.is_none() {
            let result = Pin::new(&mut this.stream).poll_shutdown(cx);
            ready!(this.deadline(cx, result))?;
            if !this.linger.load(Ordering::Acquire) {
                return Poll::Ready(Ok(()));
            }
            this.lingering = Some(Lingering {
                until: Box::pin(tokio::time::sleep(LINGER_FOR)),
                discarded: 0,
            });
        }
        let lingering = this.lingering.as_mut().expect("set just above");
        lingering.poll_drain(&mut this.stream, cx).map(Ok)
    }
}

/// The reading half of a lingering close.
struct Lingering {
    until: Pin<Box<Sleep>>,
    discarded: usize,
}

impl Lingering {
    /// Ready when the client closed, failed, or the time or byte budget is spent.
    fn poll_drain<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            if self.until.as_mut().poll(cx).is_ready() || self.discarded >= LINGER_BYTES {
                return Poll::Ready(());
            }
            let mut read = ReadBuf::new(&mut buf);
            match Pin::new(&mut *stream).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Ok(())) => self.discarded += read.filled().len(),
                Poll::Ready(Err(_)) => return Poll::Ready(()),
            }
        }
    }
}
