//! Log output: tracing's fmt layer writing to stderr through a shared buffer.
//!
//! At the default level the relay writes one line per request. Written straight to stderr, each
//! line is a `write` syscall on the request path (a file or a pipe, under the kernel's lock),
//! which cost more than the line's formatting. Here a line is copied into a buffer; a background
//! thread writes the buffer out every [`FLUSH_EVERY`], and a warning or an error is written at
//! once, with whatever came before it. A line is copied whole, so lines never interleave. On a
//! terminal every line is written at once.

use std::io::{self, BufWriter, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{Config, LogFormat};

/// How long an `info` line may wait in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Up to this much is buffered between flushes; a line that would overflow it flushes first.
const CAPACITY: usize = 64 * 1024;

/// A [`MakeWriter`] that buffers lines below `warn` and writes the others at once. Clones share
/// the buffer.
pub struct Sink<W: Write> {
    out: Arc<Mutex<BufWriter<W>>>,
    /// Every line is written at once (a terminal is watched by someone).
    unbuffered: bool,
}

impl<W: Write> Clone for Sink<W> {
    fn clone(&self) -> Self {
        Sink {
            out: Arc::clone(&self.out),
            unbuffered: self.unbuffered,
        }
    }
}

impl<W: Write> Sink<W> {
    pub fn new(out: W, unbuffered: bool) -> Self {
        Sink {
            out: Arc::new(Mutex::new(BufWriter::with_capacity(CAPACITY, out))),
            unbuffered,
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        let _ = self.lock().flush();
    }

    /// A panicking thread may hold the lock; the buffer is still whole lines.
    fn lock(&self) -> MutexGuard<'_, BufWriter<W>> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn writer(&self, urgent: bool) -> SinkWriter<'_, W> {
        SinkWriter {
            out: self.lock(),
            urgent: urgent || self.unbuffered,
        }
    }
}

/// One event's writer: tracing's fmt layer formats the line first and writes it in one call.
pub struct SinkWriter<'a, W: Write> {
    out: MutexGuard<'a, BufWriter<W>>,
    urgent: bool,
}

impl<W: Write> Write for SinkWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> Drop for SinkWriter<'_, W> {
    fn drop(&mut self) {
        if self.urgent {
            let _ = self.out.flush();
        }
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for Sink<W> {
    type Writer = SinkWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        self.writer(true)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        // Levels order by verbosity: ERROR < WARN < INFO.
        self.writer(*meta.level() <= Level::WARN)
    }
}

/// Flushes the log buffer when dropped: hold it until the process is done logging.
#[must_use = "dropping the guard flushes the log; hold it for the life of the process"]
pub struct LogGuard(Sink<io::Stderr>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// Installs the global subscriber: `SWITCHYARD_LOG` if it parses, else `log.level` when
/// serving and `warn` for the CLI.
pub fn init(config: &Config, serving: bool) -> LogGuard {
    let filter = std::env::var("SWITCHYARD_LOG")
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| {
            let level = if serving {
                config.log.level.as_str()
            } else {
                "warn"
            };
            tracing_subscriber::EnvFilter::new(level)
        });
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut sink = Sink::new(std::io::stderr(), terminal);
    let mut flusher_error = None;
    if !terminal {
        let flusher = sink.clone();
        // A thread of its own: it must flush even when every runtime thread is busy or stuck.
        let spawned = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    flusher.flush();
                }
            });
        match spawned {
            Ok(_) => {
                // What was logged before a panic is written before the panic's message.
                let on_panic = sink.clone();
                let previous = std::panic::take_hook();
                std::panic::set_hook(Box::new(move |info| {
                    if let Ok(mut out) = on_panic.out.try_lock() {
                        let _ = out.flush();
                    }
                    previous(info);
                }));
            }
            Err(e) => {
                flusher_error = Some(e);
                sink = Sink::new(std::io::stderr(), true);
            }
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_writer(sink.clone());
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
    if let Some(e) = flusher_error {
        tracing::warn!(error = %e, "cannot start the log flusher; every line is written at once");
    }
    LogGuard(sink)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Records what reaches the underlying writer, and how many writes it took.
    #[derive(Clone, Default)]
    struct Recorder {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicUsize>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Recorder {
        fn text(&self) -> String {
            String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
        }
    }

    fn subscriber(sink: Sink<Recorder>) -> impl tracing::Subscriber {
        tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .without_time()
            .with_writer(sink)
            .finish()
    }

    #[test]
    fn info_lines_wait_for_a_flush_and_a_warning_takes_them_out_in_order() {
        let out = Recorder::default();
        let sink = Sink::new(out.clone(), false);
        tracing::subscriber::with_default(subscriber(sink.clone()), || {
            tracing::info!(n = 1, "request");
            tracing::info!(n = 2, "request");
            assert_eq!(out.text(), "", "info lines are buffered");
            tracing::warn!("upstream slow");
        });
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("request n=1"), "{text}");
        assert!(lines[1].contains("request n=2"), "{text}");
        assert!(lines[2].contains("WARN") && lines[2].contains("upstream slow"));
        assert_eq!(
            out.writes.load(Ordering::SeqCst),
            1,
            "one write for all three"
        );

        tracing::subscriber::with_default(subscriber(sink.clone()), || {
            tracing::info!(n = 3, "request");
        });
        assert_eq!(out.text().lines().count(), 3);
        sink.flush();
        assert!(out.text().lines().nth(3).is_some_and(|l| l.contains("n=3")));
    }

    #[test]
    fn unbuffered_sinks_write_every_line_at_once() {
        let out = Recorder::default();
        let sink = Sink::new(out.clone(), true);
        tracing::subscriber::with_default(subscriber(sink), || {
            tracing::info!(n = 1, "request");
            assert!(out.text().contains("request n=1"));
            tracing::info!(n = 2, "request");
        });
        assert_eq!(out.text().lines().count(), 2);
        assert_eq!(out.writes.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_full_buffer_is_written_out_in_whole_lines() {
        let out = Recorder::default();
        let sink = Sink::new(out.clone(), false);
        let filler = "x".repeat(1000);
        tracing::subscriber::with_default(subscriber(sink.clone()), || {
            for n in 0..100 {
                tracing::info!(n, filler = %filler, "request");
            }
        });
        // 100 lines of ~1 KB overflow the 64 KiB buffer once: what was written is whole lines.
        let text = out.text();
        assert!(
            text.len() > 60 * 1024 && text.len() < CAPACITY,
            "{}",
            text.len()
        );
        assert!(text.ends_with('\n'));
        let lines = text.lines().count();
        assert!(
            text.lines()
                .enumerate()
                .all(|(i, l)| l.contains(&format!("n={i} ")))
        );
        assert!(lines < 100);
        assert_eq!(out.writes.load(Ordering::SeqCst), 1);
        // The rest follows at the next flush.
        sink.flush();
        assert_eq!(out.text().lines().count(), 100);
        assert_eq!(out.writes.load(Ordering::SeqCst), 2);
    }
}
