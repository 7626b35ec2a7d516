//! Log output: tracing's fmt layer writing to stderr through a shared buffer.
//!
//! At the default level the relay writes one line per request. Written straight to stderr, each
//! line is a `write` syscall on the request path (a file or a pipe, under the kernel's lock),
//! which cost more than the line's formatting. Here a line is copied into a buffer; a background
//! thread writes the buffer out every [`FLUSH_EVERY`], and a warning or an error is written at
//! once, with whatever came before it. A line is copied whole, so lines never interleave. On a
//! terminal every line is written at once.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Level, Metadata};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

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

/// Installs the global subscriber: `SWITCHYARD_LOG` if it parses (`Config::load` refuses one
/// that does not), else `log.level` when serving and `warn` for the CLI, with its admin changes'
/// audit lines (`switchyard::audit`) at `info`: a change made in process is told as one made
/// through a running relay is.
pub fn init(config: &Config, serving: bool) -> LogGuard {
    let filter = std::env::var(crate::config::LOG_FILTER_ENV)
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| {
            let level = if serving {
                config.log.level.as_str()
            } else {
                "warn,switchyard::audit=info"
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
        LogFormat::Human if terminal => builder.init(),
        LogFormat::Human => builder.fmt_fields(PlainFields).with_timer(LineTime).init(),
    }
    if let Some(e) = flusher_error {
        tracing::warn!(error = %e, "cannot start the log flusher; every line is written at once");
    }
    LogGuard(sink)
}

/// A human-format line's fields without colours: the very text tracing's default writes with
/// ANSI off (the message, then `name=value` for each field, space-separated; `log.` fields left
/// out; an error followed by its sources; terminal control sequences escaped), with two
/// differences:
/// - each name and `=` is written as it is, where the default passes them through two (empty)
///   ANSI styles: about 7k of the 17k instructions of a request's `info` line;
/// - control characters are escaped in every value, not only in the message and errors, so a
///   `Display` value that came from a client (a model's name) can neither break its line in two
///   nor forge one.
pub struct PlainFields;

impl<'w> FormatFields<'w> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> std::fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = String::new();
        escape_into(&mut text, &value.to_string());
        if let Some(first) = value.source() {
            text.push(' ');
            text.push_str(field.name());
            text.push_str(".sources=[");
            let mut source = Some(first);
            while let Some(error) = source {
                if !std::ptr::eq(error, first) {
                    text.push_str(", ");
                }
                escape_into(&mut text, &error.to_string());
                source = error.source();
            }
            text.push(']');
        }
        self.record_debug(field, &format_args!("{text}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_plain(field, itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_plain(field, itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record_plain(field, if value { "true" } else { "false" });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.begin(field) {
            self.result = write!(Escaping(&mut self.writer), "{value:?}");
        }
    }
}

impl PlainVisitor<'_> {
    /// Writes what comes before a field's value (the space after the previous field, the name and
    /// `=`, nothing for the message); false when the field is not written.
    fn begin(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        let mut begun = Ok(());
        if !std::mem::take(&mut self.first) {
            begun = self.writer.write_char(' ');
        }
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            begun = begun
                .and_then(|()| self.writer.write_str(name))
                .and_then(|()| self.writer.write_char('='));
        }
        self.result = begun;
        begun.is_ok()
    }

    /// A number's or a bool's text, written as it is: what its `Debug` writes, without the
    /// formatting machinery, for most of a request line's fields.
    fn record_plain(&mut self, field: &Field, text: &str) {
        if self.begin(field) {
            self.result = self.writer.write_str(text);
        }
    }
}

/// A line's timestamp as tracing's `SystemTime` writes it (RFC 3339, UTC, microseconds:
/// `2026-12-06T21:06:10.123456Z`), with the part up to the second formatted once per second on
/// each thread instead of on every line (about 2.5k instructions of a request's line).
pub struct LineTime;

thread_local! {
    /// The second last formatted on this thread, and its text up to the `.`.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// The first second of the year 10000, which tracing writes with a `+`: left to it.
const YEAR_10000: u64 = 253_402_300_800;

impl FormatTime for LineTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        match since {
            Ok(since) if since.as_secs() < YEAR_10000 => {
                write_time(w, since.as_secs(), since.subsec_micros())
            }
            _ => SystemTime.format_time(w),
        }
    }
}

/// Writes `secs.micros` since the epoch as `LineTime` does.
fn write_time(w: &mut impl std::fmt::Write, secs: u64, micros: u32) -> std::fmt::Result {
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != secs {
            let at = i64::try_from(secs)
                .ok()
                .and_then(|s| jiff::Timestamp::from_second(s).ok())
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            second.1.clear();
            write!(second.1, "{}", at.strftime("%Y-%m-%dT%H:%M:%S"))?;
            second.0 = secs;
        }
        w.write_str(&second.1)
    })?;
    let mut fraction = *b".000000Z";
    let mut left = micros;
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (left % 10) as u8;
        left /= 10;
    }
    w.write_str(std::str::from_utf8(&fraction).map_err(|_| std::fmt::Error)?)
}

/// Writes through to the line, escaping control characters (`escape_into`).
struct Escaping<'a, 'w>(&'a mut Writer<'w>);

impl std::fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        // A control character is below 0x20 or 0x7f; a C1 control (U+0080 to U+009F) is encoded
        // as 0xc2 and a second byte: nearly every value is written at once.
        if !s.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2) {
            return self.0.write_str(s);
        }
        let mut escaped = String::with_capacity(s.len() + 8);
        escape_into(&mut escaped, s);
        self.0.write_str(&escaped)
    }
}

/// `text` with its control characters escaped: those a terminal takes for the start of a sequence
/// as tracing's default writes them (`\x1b`, `\u{9b}`), line ends and tabs as `\n`, `\r`, `\t`,
/// the other C0 controls as `\x..`.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0'..='\x1f' | '\x7f' => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            '\u{80}'..='\u{9f}' => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::Layer;
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
            .fmt_fields(PlainFields)
            .finish()
    }

    /// Every kind of field a line can carry, as the relay and its dependencies log them.
    fn events() {
        tracing::info!(n = 1, "request");
        tracing::info!(
            request_id = %"req_1",
            model = %"claude-sonnet-4",
            status = 200u16,
            latency_ms = 5u64,
            cost_nanousd = 0u64,
            estimated = false,
            end = "complete",
            "request"
        );
        tracing::info!(r#type = "raw", "a raw identifier");
        tracing::info!(
            a = 1i64,
            b = "two",
            c = 2.5f64,
            d = -3i64,
            e = u64::MAX,
            f = true
        );
        tracing::info!(list = ?vec![1, 2], text = ?"quoted \"x\"", "debug values");
        tracing::warn!("a message with \x1b[31m an escape, \x07 a bell and \u{9b} a C1 control");
        let chain = Layer(
            "outer",
            Some(Box::new(Layer(
                "middle \x1b",
                Some(Box::new(Layer("inner", None))),
            ))),
        );
        tracing::warn!(
            error = &chain as &(dyn std::error::Error + 'static),
            "failed"
        );
        let alone = Layer("alone", None);
        tracing::warn!(
            error = &alone as &(dyn std::error::Error + 'static),
            "failed"
        );
        let span = tracing::info_span!("work", job = 7, name = "batch");
        span.in_scope(|| tracing::info!(step = 2, "inside a span"));
    }

    #[test]
    fn plain_fields_write_what_the_default_writes_without_colours() {
        let (plain, default) = (Recorder::default(), Recorder::default());
        let build = || {
            tracing_subscriber::fmt()
                .with_env_filter("info")
                .with_ansi(false)
                .without_time()
        };
        let with_plain = build()
            .with_writer(Sink::new(plain.clone(), true))
            .fmt_fields(PlainFields)
            .finish();
        tracing::subscriber::with_default(with_plain, events);
        let with_default = build()
            .with_writer(Sink::new(default.clone(), true))
            .finish();
        tracing::subscriber::with_default(with_default, events);
        let (plain, default) = (plain.text(), default.text());
        assert_eq!(plain.lines().count(), 9, "{plain}");
        assert!(
            plain.contains(r"an escape, \x07 a bell and \u{9b}"),
            "{plain}"
        );
        assert!(plain.contains("error.sources=[middle"), "{plain}");
        assert_eq!(plain, default);
    }

    proptest::proptest! {
        #[test]
        fn line_time_writes_what_rfc_3339_with_microseconds_says(
            secs in 0u64..YEAR_10000,
            micros in 0u32..1_000_000,
            again in proptest::bool::ANY,
        ) {
            let mut text = String::new();
            write_time(&mut text, secs, micros).unwrap();
            if again {
                // The second's text is cached: a second line of it reads the same.
                text.clear();
                write_time(&mut text, secs, micros).unwrap();
            }
            let at = jiff::Timestamp::new(secs as i64, micros as i32 * 1000).unwrap();
            proptest::prop_assert_eq!(text, at.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string());
        }
    }

    #[test]
    fn line_time_has_the_shape_of_tracings_system_time() {
        let (mut ours, mut theirs) = (String::new(), String::new());
        LineTime.format_time(&mut Writer::new(&mut ours)).unwrap();
        SystemTime
            .format_time(&mut Writer::new(&mut theirs))
            .unwrap();
        assert_eq!(ours.len(), theirs.len(), "{ours} / {theirs}");
        // The same up to the minute, unless a minute turned between the two calls.
        assert!(
            ours[..16] == theirs[..16] || ours[17..19] == *"00",
            "{ours} / {theirs}"
        );
        assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
    }

    #[test]
    fn a_value_cannot_break_its_line_or_send_a_terminal_sequence() {
        let out = Recorder::default();
        tracing::subscriber::with_default(subscriber(Sink::new(out.clone(), true)), || {
            let model = "claude\n2026-12-06T00:00:00Z  INFO forged: request\r\t\x1b[2J\u{9b}\0";
            tracing::info!(model = %model, status = 200, "request");
        });
        let text = out.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        let expected = r"request model=claude\n2026-12-06T00:00:00Z  INFO forged: request\r\t\x1b[2J\u{9b}\x00 status=200";
        assert!(text.ends_with(&format!("{expected}\n")), "{text}");
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
