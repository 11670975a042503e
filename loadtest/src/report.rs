//! Figures from samples: throughput, latency percentiles, answers by
//! status and code, a timeline; the JSON summary and the PNG chart.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::Sample;

/// Width of a timeline bucket, seconds.
const BUCKET: f64 = 0.5;

#[derive(Debug, Clone, Serialize)]
pub struct PhaseStats {
    pub name: String,
    pub mode: String,
    pub requests: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub statuses: BTreeMap<String, usize>,
    pub codes: BTreeMap<String, usize>,
    pub timeline: Vec<Point>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Seconds since the phase's first request was due.
    pub at: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn ms(us: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "latencies are far below 2^52 µs")]
    let v = us as f64 / 1000.0;
    round(v)
}

/// One decimal is all a noisy machine's figures carry.
fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?)
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

pub fn stats<'a>(
    name: &str,
    mode: &str,
    samples: impl IntoIterator<Item = &'a Sample>,
) -> anyhow::Result<PhaseStats> {
    let samples: Vec<&Sample> = samples.into_iter().collect();
    let mut h = histogram()?;
    let mut statuses = BTreeMap::new();
    let mut codes = BTreeMap::new();
    let first = samples.iter().map(|s| s.due).min().unwrap_or_default();
    let last = samples
        .iter()
        .map(|s| s.due + s.latency)
        .max()
        .unwrap_or_default();
    let mut buckets: BTreeMap<usize, Histogram<u64>> = BTreeMap::new();
    for s in &samples {
        let us = micros(s.latency);
        h.saturating_record(us);
        *statuses.entry(s.outcome.status.to_string()).or_insert(0) += 1;
        let code = if s.outcome.code.starts_with("transport") {
            "TRANSPORT_ERROR".to_owned()
        } else {
            s.outcome.code.clone()
        };
        *codes.entry(code).or_insert(0) += 1;
        let done = (s.due + s.latency).saturating_sub(first).as_secs_f64();
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a non-negative bucket index"
        )]
        let b = (done / BUCKET) as usize;
        match buckets.get_mut(&b) {
            Some(bh) => bh.saturating_record(us),
            None => {
                let mut bh = histogram()?;
                bh.saturating_record(us);
                buckets.insert(b, bh);
            }
        }
    }
    let seconds = last.saturating_sub(first).as_secs_f64().max(1e-6);
    #[expect(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
    let timeline = buckets
        .iter()
        .map(|(b, bh)| Point {
            at: (*b as f64) * BUCKET,
            per_second: round(bh.len() as f64 / BUCKET),
            p50_ms: ms(bh.value_at_quantile(0.5)),
            p99_ms: ms(bh.value_at_quantile(0.99)),
        })
        .collect();
    #[expect(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
    let per_second = samples.len() as f64 / seconds;
    Ok(PhaseStats {
        name: name.to_owned(),
        mode: mode.to_owned(),
        requests: samples.len(),
        seconds: (seconds * 1000.0).round() / 1000.0,
        per_second: round(per_second),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p90_ms: ms(h.value_at_quantile(0.9)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        statuses,
        codes,
        timeline,
    })
}

/// One target of the issue, as measured.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

pub fn target(what: &str, target: String, measured: String, met: bool) -> Target {
    Target {
        what: what.to_owned(),
        target,
        measured,
        met,
    }
}

/// The correctness target of a run: met when every check passed.
pub fn correctness(what: &str, expected: &str, check: &crate::check::CheckReport) -> Target {
    target(
        what,
        expected.to_owned(),
        if check.ok() {
            "all checks passed".into()
        } else {
            check.problems.join("; ")
        },
        check.ok(),
    )
}

/// What every run's checks look for.
pub const CHECKS: &str = "no oversell, no lost booking, Redis = PostgreSQL, no 5xx";

#[expect(clippy::print_stdout, reason = "the load test reports on stdout")]
pub fn print_targets(targets: &[Target]) {
    for t in targets {
        println!(
            "[{}] {}: target {}; measured {}",
            if t.met { "MET" } else { "MISSED" },
            t.what,
            t.target,
            t.measured
        );
    }
}

/// One line of a phase's figures.
#[expect(clippy::print_stdout, reason = "the load test reports on stdout")]
pub fn print_phase(p: &PhaseStats) {
    println!(
        "{:<50} {:>7} req in {:>6.2} s = {:>7.0}/s  p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  {:?}",
        p.name, p.requests, p.seconds, p.per_second, p.p50_ms, p.p99_ms, p.max_ms, p.codes
    );
}

/// Write `value` as pretty JSON.
pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn register_font() -> bool {
    const CANDIDATES: [&str; 2] = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    ];
    for path in CANDIDATES {
        if let Ok(bytes) = std::fs::read(path) {
            // plotters keeps registered fonts for the process's life.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes).is_ok()
            {
                return true;
            }
        }
    }
    false
}

/// Throughput and p50/p99 over time, one line per phase, phases aligned at
/// their first request.
pub fn chart(path: &Path, title: &str, phases: &[&PhaseStats]) -> anyhow::Result<()> {
    use plotters::prelude::*;
    if !register_font() {
        tracing::warn!("no DejaVuSans.ttf found: the PNG chart is skipped");
        return Ok(());
    }
    let root = BitMapBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (top, bottom) = root.split_vertically(450);
    let span = phases
        .iter()
        .flat_map(|p| p.timeline.last().map(|t| t.at + BUCKET))
        .fold(1.0_f64, f64::max);
    let max_rate = phases
        .iter()
        .flat_map(|p| p.timeline.iter().map(|t| t.per_second))
        .fold(1.0_f64, f64::max);
    let max_ms = phases
        .iter()
        .flat_map(|p| p.timeline.iter().map(|t| t.p99_ms))
        .fold(1.0_f64, f64::max);
    let colors = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing the chart: {e}");

    let mut c = ChartBuilder::on(&top)
        .caption(format!("{title}: answers per second"), ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..span, 0.0..max_rate * 1.1)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .x_desc("seconds since the phase's first request")
        .y_desc("answers/s")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, p) in phases.iter().enumerate() {
        let color = colors[i % colors.len()];
        c.draw_series(LineSeries::new(
            p.timeline.iter().map(|t| (t.at, t.per_second)),
            color,
        ))
        .map_err(|e| err(&e))?
        .label(p.name.clone())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| err(&e))?;

    let mut c = ChartBuilder::on(&bottom)
        .caption("latency p50 (thin) and p99 (thick), ms", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..span, 0.0..max_ms * 1.1)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .x_desc("seconds since the phase's first request")
        .y_desc("ms")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, p) in phases.iter().enumerate() {
        let color = colors[i % colors.len()];
        c.draw_series(LineSeries::new(
            p.timeline.iter().map(|t| (t.at, t.p50_ms)),
            color,
        ))
        .map_err(|e| err(&e))?;
        c.draw_series(LineSeries::new(
            p.timeline.iter().map(|t| (t.at, t.p99_ms)),
            color.stroke_width(3),
        ))
        .map_err(|e| err(&e))?
        .label(p.name.clone())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
