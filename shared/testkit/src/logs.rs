//! Every log line a test process's services write, as JSON lines in a file
//! of its own, so that the whole suite's logs can be scanned for personal
//! data and secrets afterwards (`scripts/scan-test-logs.sh`,
//! [`crate::logscan`]).
//!
//! [`capture`] installs, once per process, the global `tracing` subscriber:
//! the services' JSON format with the fields of every span an event is in,
//! and a line for each span as it closes (its fields, even when nothing
//! inside logged); our crates at `trace`, everything else at `info`
//! ([`DEFAULT_FILTER`]; `JYT_TEST_LOG_FILTER` overrides it). Lines go
//! through a channel to one thread that owns the file, so a service thread
//! never waits on the disk. Spans are bridged to OpenTelemetry as
//! `jyt-telemetry` does, so W3C `traceparent` flows from service to service
//! as in production (and `jyt_telemetry::init` called later in the process
//! finds a subscriber and leaves it). The helpers that start services call
//! it ([`crate::fresh_database`], [`crate::fresh_redis_prefix`], ...), so
//! every test binary that starts a service is captured without a line of
//! its own. A process that installed its own subscriber first (the OTLP
//! test, the load generator) keeps it and is not captured.
//!
//! The file is `<dir>/<test binary>-<pid>.jsonl`; `<dir>` is
//! `JYT_TEST_LOG_DIR` (a relative path is taken from the directory holding
//! cargo's target directory, i.e. the workspace), else `test-logs` in the
//! target directory; `JYT_TEST_LOGS=off` captures nothing. Lines still
//! queued when the process exits are lost: a test that reads its own logs
//! calls [`read_own`], which waits for them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The most verbose level our services log at, for every crate of ours;
/// dependencies at `info` (their `debug` is not what production runs).
pub const DEFAULT_FILTER: &str = "info,gateway=trace,slot_inventory=trace,card_issuing=trace,\
     channel_accounting=trace,jyt=trace,jyt_web=trace,jyt_db=trace,jyt_cache=trace,\
     jyt_events=trace,jyt_settings=trace,jyt_telemetry=trace,jyt_domain=trace,jyt_testkit=trace";

/// Spans exported to OpenTelemetry: `jyt-telemetry`'s own threshold.
const TRACE_FILTER: &str = "info,h2=off,hyper=off,reqwest=off,tokio_postgres=off";

/// Where the log files go when `JYT_TEST_LOG_DIR` is not set.
pub const DEFAULT_DIR_NAME: &str = "test-logs";

enum Message {
    Line(Vec<u8>),
    /// Write out everything queued before, then answer.
    Flush(mpsc::SyncSender<()>),
}

struct Capture {
    path: PathBuf,
    lines: Sender<Message>,
}

static CAPTURE: OnceLock<Option<Capture>> = OnceLock::new();

/// Capture this process's logs into [`log_dir`], unless a subscriber is
/// already installed. Returns the file when this process is captured.
pub fn capture() -> Option<&'static Path> {
    CAPTURE
        .get_or_init(|| {
            // `JYT_TEST_LOGS=off`: not captured (to compare the suite's
            // time; the scan then fails, finding no file).
            let off = std::env::var("JYT_TEST_LOGS").is_ok_and(|v| v == "off");
            if off { None } else { install(&log_dir()) }
        })
        .as_ref()
        .map(|c| c.path.as_path())
}

/// [`capture`] into `dir` instead: for testing the capture and the scanner
/// themselves without mixing planted lines into the suite's logs. The first
/// call of either in a process decides.
pub fn capture_into(dir: &Path) -> Option<&'static Path> {
    CAPTURE
        .get_or_init(|| install(dir))
        .as_ref()
        .map(|c| c.path.as_path())
}

/// Wait until every line logged so far is in the file.
pub fn flush() {
    let Some(Some(capture)) = CAPTURE.get() else {
        return;
    };
    let (done, written) = mpsc::sync_channel(1);
    if capture.lines.send(Message::Flush(done)).is_ok() {
        // The writer answers as soon as it has written what was queued; a
        // full minute means it is gone, and the caller reads what is there.
        if written.recv_timeout(Duration::from_secs(60)).is_err() {
            eprintln!("jyt-testkit: the log writer did not answer a flush");
        }
    }
}

/// Every line this process has logged so far (after [`flush`]); empty when
/// it is not captured.
pub fn read_own() -> String {
    flush();
    let Some(Some(capture)) = CAPTURE.get() else {
        return String::new();
    };
    match std::fs::read(&capture.path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            eprintln!("jyt-testkit: cannot read {}: {e}", capture.path.display());
            String::new()
        }
    }
}

/// `JYT_TEST_LOG_DIR`, else `test-logs` in cargo's target directory.
pub fn log_dir() -> PathBuf {
    let target = target_dir();
    match std::env::var_os("JYT_TEST_LOG_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                target.parent().unwrap_or(Path::new(".")).join(dir)
            }
        }
        None => target.join(DEFAULT_DIR_NAME),
    }
}

/// The cargo target directory this binary was built in (the one holding
/// `CACHEDIR.TAG`): test binaries run with their package as working
/// directory, so a relative `target/` would differ per package.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|dir| dir.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn install(dir: &Path) -> Option<Capture> {
    if tracing::dispatcher::has_been_set() {
        return None;
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!(
            "jyt-testkit: logs not captured, cannot create {}: {e}",
            dir.display()
        );
        return None;
    }
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "test".to_owned());
    let path = dir.join(format!("{binary}-{}.jsonl", std::process::id()));
    let file = match File::create(&path) {
        Ok(file) => file,
        Err(e) => {
            eprintln!(
                "jyt-testkit: logs not captured, cannot create {}: {e}",
                path.display()
            );
            return None;
        }
    };
    let (lines, queue) = mpsc::channel();
    let writer = std::thread::Builder::new()
        .name("jyt-test-logs".to_owned())
        .spawn({
            let path = path.clone();
            move || write_lines(&path, file, &queue)
        });
    if let Err(e) = writer {
        eprintln!("jyt-testkit: logs not captured, no writer thread: {e}");
        return None;
    }

    // Without an exporter the provider still mints trace and span ids, so
    // `traceparent` flows between services and shows in the logs.
    let provider = SdkTracerProvider::builder().build();
    let tracer = provider.tracer("jyt-tests");
    let filter = std::env::var("JYT_TEST_LOG_FILTER")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER));
    let installed = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                // A line as each span closes, with its fields: what would be
                // exported as a trace is checked even where nothing inside
                // logged an event.
                .with_span_events(FmtSpan::CLOSE)
                .with_writer(ToFile(lines.clone()))
                .with_filter(filter),
        )
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(EnvFilter::new(TRACE_FILTER)),
        )
        .try_init();
    if installed.is_err() {
        // Another subscriber got there between the check and now; dropping
        // the sender ends the writer, and the empty file goes too.
        drop(lines);
        if let Err(e) = std::fs::remove_file(&path) {
            eprintln!("jyt-testkit: cannot remove {}: {e}", path.display());
        }
        return None;
    }
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
    opentelemetry::global::set_tracer_provider(provider);
    Some(Capture { path, lines })
}

/// The writer thread: lines in order, flushed whenever the queue is empty,
/// so what was logged reaches the file within moments without a write per
/// line under load.
fn write_lines(path: &Path, file: File, queue: &Receiver<Message>) {
    let mut out = BufWriter::with_capacity(1 << 16, file);
    let mut failed = false;
    let mut report = |result: std::io::Result<()>| {
        if let Err(e) = result
            && !failed
        {
            failed = true;
            eprintln!("jyt-testkit: writing {} failed: {e}", path.display());
        }
    };
    while let Ok(mut message) = queue.recv() {
        loop {
            match message {
                Message::Line(line) => report(out.write_all(&line)),
                Message::Flush(done) => {
                    report(out.flush());
                    // The caller may have stopped waiting; nothing to tell.
                    done.send(()).unwrap_or_default();
                }
            }
            match queue.try_recv() {
                Ok(next) => message = next,
                Err(_) => break,
            }
        }
        report(out.flush());
    }
}

/// Hands each formatted event to the writer thread.
#[derive(Clone)]
struct ToFile(Sender<Message>);

/// One event: `tracing-subscriber` writes a whole line, then drops this.
struct LineWriter {
    line: Vec<u8>,
    lines: Sender<Message>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            // Fails only once the writer thread is gone (the process is
            // ending); the line cannot go anywhere else.
            self.lines.send(Message::Line(line)).unwrap_or_default();
        }
    }
}

impl<'a> MakeWriter<'a> for ToFile {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            line: Vec::with_capacity(512),
            lines: self.0.clone(),
        }
    }
}
