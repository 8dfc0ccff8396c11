use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::{broadcast, watch};
use tracing::instrument;

/// The receiver for the stop signal, which can be used to indicate that
/// a part, or all of the system is required to shut down.
/// This stop handle can be cloned to pass the signal to multiple async tasks,
/// and it can be forked to let child tasks have their own stop logic in addition
/// to the parent system  stop logic.
#[derive(Debug)]
pub struct Stop {
    stopped: bool,
    /// Set (before the broadcast) by the stopper: a receiver subscribed after the broadcast
    /// went out (a clone, a fork) still learns of it.
    flag: Arc<AtomicBool>,
    receiver: broadcast::Receiver<()>,
    sender: broadcast::Sender<()>,
}

impl Stop {
    /// Create a new Stop and Stopper
    pub fn new() -> (Stop, Stopper) {
        let (sender, receiver) = broadcast::channel::<()>(1);
        let flag = Arc::new(AtomicBool::new(false));
        let stopper = Stopper::new(sender.clone(), flag.clone());
        let stop = Stop {
            stopped: false,
            flag,
            receiver,
            sender,
        };
        (stop, stopper)
    }

    /// Whether the stop signal was sent
    pub fn stop_received(&self) -> bool {
        self.stopped || self.flag.load(Ordering::SeqCst)
    }

    /// Wait for the stop signal to be received
    pub async fn recv(&mut self) {
        // The receiver was subscribed before this check: a signal sent before it set the flag
        // first (seen here), one sent after it reaches the receiver.
        if self.stop_received() {
            self.stopped = true;
            return;
        }

        let _ = self.receiver.recv().await;

        self.stopped = true;
    }

    /// Creates a sub-signal that has its own stopper but propagates the stop signal from the original
    pub fn fork(&self) -> (Stop, Stopper) {
        let (forked_stop, forked_stopper) = Stop::new();
        let forked_sender = forked_stop.sender.clone();
        let forked_flag = forked_stop.flag.clone();
        let mut original_receiver = self.sender.subscribe();
        // Subscribed first, checked second: a stop sent before the fork (a link created while
        // its proxy was being stopped) is passed on at once instead of being missed.
        if self.stop_received() {
            forked_flag.store(true, Ordering::SeqCst);
            let _ = forked_sender.send(());
        }
        tokio::spawn(async move {
            // A stop is sent once and never undone, so the first signal is the only one to
            // pass on. `Lagged` is a signal too: two stops reaching the original before this
            // task read one (a proxy's disable and a link's own end) overwrite each other in
            // the channel of capacity 1; taking that for the channel's end left the fork, and
            // every link under it, running through a cut (BLYAN.md, patch 6).
            match original_receiver.recv().await {
                Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    forked_flag.store(true, Ordering::SeqCst);
                    let _ = forked_sender.send(());
                }
                Err(broadcast::error::RecvError::Closed) => {}
            }
            drop(forked_sender);
        });
        (forked_stop, forked_stopper)
    }

    /// Creates a new stopper for this Stop signal that can be used to stop this Stop and all
    /// its forked descendants
    pub fn get_stopper(&self) -> Stopper {
        Stopper::new(self.sender.clone(), self.flag.clone())
    }
}

impl Clone for Stop {
    fn clone(&self) -> Self {
        Self {
            stopped: self.stopped,
            flag: self.flag.clone(),
            receiver: self.sender.subscribe(),
            sender: self.sender.clone(),
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.stop_received() {
            write!(f, "stopped")
        } else {
            write!(f, "NOT stopped")
        }
    }
}

/// A handle that can send a stop signal once to all subscribers
#[derive(Debug, Clone)]
pub struct Stopper {
    sender: broadcast::Sender<()>,
    flag: Arc<AtomicBool>,
}

impl Stopper {
    pub(crate) fn new(sender: broadcast::Sender<()>, flag: Arc<AtomicBool>) -> Self {
        Self { sender, flag }
    }

    /// Sends the stop signal
    #[instrument(level = "trace", skip(self))]
    pub fn stop(self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.sender.send(());
    }
}
/// A receiver for the close signal, which is used to indicate that a resource
/// is ready to close
#[derive(Debug, Clone)]
pub struct Close {
    receiver: watch::Receiver<Option<()>>,
}

/// The sender for the close signal, to indicate that the owner of this closer
/// is ready to close
#[derive(Debug)]
pub struct Closer {
    sender: watch::Sender<Option<()>>,
}

/// The listen channel closed before the close signal was received
#[derive(Error, Copy, Clone, Debug)]
#[error("Close channel closed")]
pub struct CloseError;

/// Could not snd the close signal, listener for close dropped
#[derive(Error, Copy, Clone, Debug)]
#[error("Could not close, already closed?")]
pub struct CloserError;

impl Close {
    /// Create a new Close and Closer
    pub fn new() -> (Close, Closer) {
        let (sender, receiver) = watch::channel(None);
        let close = Close { receiver };
        let closer = Closer { sender };
        (close, closer)
    }

    /// Wait for the close signal
    pub async fn recv(mut self) -> Result<(), CloseError> {
        self.receiver.changed().await.map_err(|_| CloseError)
    }
}

impl Closer {
    /// Send the close signal and consume this closer
    pub fn close(self) -> Result<(), CloseError> {
        self.sender.send(Some(())).map_err(|_| CloseError)
    }
}
