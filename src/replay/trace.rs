//! Turns input records into what the simulation needs: arrivals per second of trace
//! time, and (for request logs) the shipped profiler's signatures and their mix.

use super::input::{Record, Request};
use prescale_profiler::route::PathShape;
use prescale_profiler::sample::{Arrival, Completion, InlinePath, Method, Millis, Sample};
use prescale_profiler::series::{Bucket, MINUTE_MS};
use prescale_profiler::{Profile, ProfileView, ProfilerConfig};
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// How a request's service time is modelled when the log does not carry one.
#[derive(Clone, Copy, Debug)]
pub struct ServiceModel {
    pub base: Duration,
    /// Response bytes per second (bandwidth-bound part of a response).
    pub bytes_per_second: f64,
}

/// Arrivals per second, from the first record's second on.
pub struct Trace {
    pub start_unix: u64,
    /// Requests per second; 0 inside a gap (see `gaps`: there it means "unknown").
    pub arrivals: Vec<f64>,
    /// Spans of the trace with no data, in order (see [`Gap`]).
    pub gaps: Vec<Gap>,
    pub requests: u64,
    /// Seconds per row of an aggregated input (0 for request logs).
    pub interval: u64,
    /// Requests whose service time came from the log rather than the model.
    pub timed_requests: u64,
    pub profile: Option<Profiled>,
    /// A request log's minute buckets as the profiler keeps them (requests and
    /// service time per signature, by the model in force when each request was
    /// ingested), each taken once complete, exactly as the sidecar's profiler thread
    /// hands them to its forecaster; oldest first. Empty for a count series.
    pub minutes: Vec<Bucket>,
    /// A request log's bytes and logged service time per minute (Unix ms of its
    /// start): what the log implies the service used (see `costs.rs`).
    pub usage: std::collections::BTreeMap<Millis, MinuteUse>,
    /// Per signature (as assigned at ingest, as in the minute buckets): requests and
    /// request plus response body bytes.
    pub signature_bytes: std::collections::BTreeMap<u32, (u64, f64)>,
}

/// What one minute of a request log carried and logged.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MinuteUse {
    pub requests: u64,
    /// Request plus response body bytes (as the sidecar counts its network).
    pub bytes: f64,
    /// Requests with a logged service time, and the sum of those times (seconds).
    pub timed_requests: u64,
    pub timed_seconds: f64,
}

/// A span the input says nothing about: rows missing from an aggregated series (a
/// timestamp further than one interval after the previous row's), or a silence in a
/// request log that its own rate makes implausible as real quiet (see
/// [`SILENCE_EXPECTED`]). Not zero demand: the forecaster is not fed zeros there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// Seconds from the trace's start.
    pub start: u64,
    pub seconds: u64,
    /// Rows of the series' interval missing (0 for a request log's silence).
    pub missing_rows: u64,
}

/// A request log's silence is a gap when, at the log's mean rate, it should have held
/// at least this many requests: at 200 the chance of it being real quiet is nil even
/// where the night's rate is a quarter of the mean.
pub const SILENCE_EXPECTED: f64 = 200.0;
/// Silences shorter than this are never gaps (minutes of quiet are normal).
const MIN_SILENCE_SECONDS: f64 = 600.0;

/// The profiler's view of a request log.
pub struct Profiled {
    pub view: ProfileView,
    /// Signature ids in column order for `mix`.
    pub ids: Vec<u32>,
    /// Requests per (row, signature column); rows every `row_every` seconds.
    pub mix: Vec<Vec<u32>>,
    pub row_seconds: u64,
    pub refits: u64,
}

/// Requests handed to the profiler per batch (the sidecar's profiler drains similar).
const BATCH: usize = 1024;
/// Batches that may try for a first model before the regular schedule takes over.
const FIRST_FIT_ATTEMPTS: u64 = 8;
/// A trace longer than this is an input mistake, not a replay (10 years).
const MAX_SPAN_SECONDS: u64 = 10 * 365 * 86_400;

pub struct Builder {
    service: ServiceModel,
    row_every: u64,
    trace: Trace,
    profile: Option<Profile>,
    batch: Vec<Sample>,
    /// Mix by row and raw signature id (ids ≤ max signatures, so small).
    mix: Vec<Vec<u32>>,
    started: bool,
    refit_every_ms: u64,
    last_refit_ms: u64,
    attempts: u64,
    /// End (seconds, exclusive) of the latest aggregated row, to find missing rows.
    covered_until: Option<f64>,
    /// Time of the latest request, to find silences.
    last_request: Option<f64>,
    /// Silences of at least `MIN_SILENCE_SECONDS` (start, end) in unix seconds; judged
    /// against the log's rate at the end.
    silences: Vec<(f64, f64)>,
    /// Start of the newest minute bucket taken from the profiler.
    minutes_through: Option<Millis>,
}

impl Builder {
    /// `profile_span` is the trace's expected length: re-fits are spread over it (at
    /// most ~48), so a long log does not spend its time clustering.
    pub fn new(service: ServiceModel, row_every: u64, profile_span: Option<u64>) -> Self {
        let refit_every_ms =
            profile_span.map_or(3_600_000, |s| (s * 1000 / 48).clamp(300_000, 86_400_000));
        Self {
            service,
            row_every: row_every.max(1),
            trace: Trace {
                start_unix: 0,
                arrivals: Vec::new(),
                requests: 0,
                interval: 0,
                timed_requests: 0,
                profile: None,
                gaps: Vec::new(),
                minutes: Vec::new(),
                usage: Default::default(),
                signature_bytes: Default::default(),
            },
            profile: None,
            batch: Vec::with_capacity(BATCH),
            mix: Vec::new(),
            started: false,
            refit_every_ms,
            last_refit_ms: 0,
            attempts: 0,
            covered_until: None,
            last_request: None,
            silences: Vec::new(),
            minutes_through: None,
        }
    }

    fn second(&mut self, ts: f64) -> Option<usize> {
        if !ts.is_finite() || ts < 0.0 {
            return None;
        }
        let s = ts.floor() as u64;
        if !self.started {
            self.started = true;
            self.trace.start_unix = s;
        }
        let offset = s.checked_sub(self.trace.start_unix)?;
        if offset > MAX_SPAN_SECONDS {
            return None;
        }
        let i = offset as usize;
        if self.trace.arrivals.len() <= i {
            self.trace.arrivals.resize(i + 1, 0.0);
        }
        Some(i)
    }

    pub fn add(&mut self, record: &Record) {
        match record {
            Record::Count {
                ts,
                count,
                interval,
            } => {
                let secs = interval.round().max(1.0) as usize;
                self.trace.interval = self.trace.interval.max(secs as u64);
                let Some(i) = self.second(*ts) else { return };
                // Rows more than half an interval late: the ones between are missing.
                if let Some(until) = self.covered_until {
                    let missing = ((ts - until) / *interval).round();
                    if missing >= 1.0 {
                        let start = until.floor() as u64;
                        self.trace.gaps.push(Gap {
                            start: start.saturating_sub(self.trace.start_unix),
                            seconds: (ts.floor() as u64).saturating_sub(start),
                            missing_rows: missing as u64,
                        });
                    }
                }
                let end_ts = ts + interval;
                self.covered_until = Some(self.covered_until.map_or(end_ts, |u| u.max(end_ts)));
                let end = i + secs;
                if self.trace.arrivals.len() < end {
                    self.trace.arrivals.resize(end, 0.0);
                }
                let per = count.max(0.0) / secs as f64;
                if let Some(w) = self.trace.arrivals.get_mut(i..end) {
                    w.iter_mut().for_each(|a| *a += per);
                }
                self.trace.requests += count.max(0.0).round() as u64;
            }
            Record::Request(r) => {
                let Some(i) = self.second(r.ts) else { return };
                if let Some(last) = self.last_request {
                    if r.ts - last >= MIN_SILENCE_SECONDS {
                        self.silences.push((last, r.ts));
                    }
                }
                self.last_request = Some(self.last_request.map_or(r.ts, |l| l.max(r.ts)));
                if let Some(a) = self.trace.arrivals.get_mut(i) {
                    *a += 1.0;
                }
                self.trace.requests += 1;
                self.profile_request(r);
            }
        }
    }

    fn profile_request(&mut self, r: &Request) {
        let at = (r.ts * 1000.0) as u64;
        let used = self.trace.usage.entry(at - at % MINUTE_MS).or_default();
        used.requests += 1;
        used.bytes += (r.bytes + r.request_bytes.unwrap_or(0)) as f64;
        let service = match r.duration.or(r.upstream_time) {
            Some(d) if d.is_finite() && d >= 0.0 => {
                self.trace.timed_requests += 1;
                used.timed_requests += 1;
                used.timed_seconds += d;
                d
            }
            _ => {
                self.service.base.as_secs_f64()
                    + r.bytes as f64 / self.service.bytes_per_second.max(1.0)
            }
        };
        let sample = Sample {
            at,
            arrival: Arrival {
                method: Method::parse(&r.method),
                shape: PathShape::of(&r.path),
                request_bytes: r.request_bytes.unwrap_or(0),
                source: r.source.as_deref().map_or(0, hash),
                tier: 0,
            },
            completion: Completion {
                request_bytes: r.request_bytes.unwrap_or(0),
                response_bytes: r.bytes,
                service_time_us: (service * 1e6) as u64,
                status: r.status,
                fanout: 0,
            },
            path: InlinePath::new(&r.path),
            guess: None,
        };
        self.batch.push(sample);
        if self.batch.len() >= BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let profile = self
            .profile
            .get_or_insert_with(|| Profile::new(&ProfilerConfig::default(), 0x7072_6573));
        let bytes = &mut self.trace.signature_bytes;
        profile.ingest_each(&self.batch, |s, sig| {
            let e = bytes.entry(sig).or_default();
            e.0 += 1;
            e.1 += (s.completion.request_bytes + s.completion.response_bytes) as f64;
        });
        let model = profile.model();
        let start_ms = self.trace.start_unix * 1000;
        for s in &self.batch {
            let sig = model.assign(s).unwrap_or(0) as usize;
            let row = (s.at.saturating_sub(start_ms) / 1000 / self.row_every) as usize;
            if self.mix.len() <= row {
                self.mix.resize(row + 1, Vec::new());
            }
            if let Some(r) = self.mix.get_mut(row) {
                if r.len() <= sig {
                    r.resize(sig + 1, 0);
                }
                if let Some(c) = r.get_mut(sig) {
                    *c += 1;
                }
            }
        }
        let now = self.batch.last().map_or(0, |s| s.at);
        self.batch.clear();
        take_minutes(
            profile,
            &mut self.trace.minutes,
            &mut self.minutes_through,
            now,
        );
        // The live profiler re-fits on its interval; here the interval is scaled to
        // the trace so clustering cost stays bounded.
        // An attempt counts even when no model came of it (too few distinct samples, a
        // poor clustering): retrying every batch would spend the replay clustering.
        let due = now.saturating_sub(self.last_refit_ms) >= self.refit_every_ms;
        if due || (profile.refits() == 0 && self.attempts < FIRST_FIT_ATTEMPTS) {
            self.attempts += 1;
            self.last_refit_ms = now;
            profile.maybe_refit(now);
        }
    }

    pub fn finish(mut self) -> Trace {
        self.flush();
        self.judge_silences();
        if let Some(p) = self.profile.take() {
            let now = (self.trace.start_unix + self.trace.arrivals.len() as u64) * 1000;
            // The log has ended: every minute is complete.
            take_minutes(
                &p,
                &mut self.trace.minutes,
                &mut self.minutes_through,
                Millis::MAX,
            );
            let view = p.view(now);
            let width = self.mix.iter().map(Vec::len).max().unwrap_or(0);
            let ids: Vec<u32> = (0..width as u32).collect();
            let mix = self
                .mix
                .into_iter()
                .map(|mut r| {
                    r.resize(width, 0);
                    r
                })
                .collect();
            self.trace.profile = Some(Profiled {
                view,
                ids,
                mix,
                row_seconds: self.row_every,
                refits: p.refits(),
            });
        }
        self.trace
    }
}

impl Builder {
    /// Keeps the silences the log's own mean rate (over its whole span, silences
    /// included, so the judgement errs towards quiet) makes implausible, as gaps.
    fn judge_silences(&mut self) {
        let span = self.trace.arrivals.len() as f64;
        if span <= 0.0 || self.silences.is_empty() {
            return;
        }
        let rate = self.trace.requests as f64 / span;
        let start = self.trace.start_unix;
        for (a, b) in std::mem::take(&mut self.silences) {
            if (b - a) * rate >= SILENCE_EXPECTED {
                // The seconds strictly between the two requests' seconds.
                let first = a.floor() as u64 + 1;
                let end = b.floor() as u64;
                self.trace.gaps.push(Gap {
                    start: first.saturating_sub(start),
                    seconds: end.saturating_sub(first),
                    missing_rows: 0,
                });
            }
        }
        self.trace.gaps.sort_by_key(|g| g.start);
    }
}

/// Moves the minutes complete at `now` (trace time: the newest request ingested) out
/// of the profiler's series, as the sidecar's profiler thread sends them each tick.
fn take_minutes(
    profile: &Profile,
    out: &mut Vec<Bucket>,
    through: &mut Option<Millis>,
    now: Millis,
) {
    let grace = prescale_engine::MINUTE_GRACE_MS;
    for b in profile.series().complete_minutes(now, grace, *through) {
        out.push(b.clone());
        *through = Some(b.start);
    }
}

fn hash(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

impl Trace {
    /// Demand per second: arrivals averaged over windows of `resolution` seconds
    /// (bursts shorter than that are assumed absorbed by queues).
    pub fn demand(&self, resolution: u64) -> Vec<f64> {
        let r = resolution.max(1) as usize;
        let mut out = Vec::with_capacity(self.arrivals.len());
        for w in self.arrivals.chunks(r) {
            let mean = w.iter().sum::<f64>() / r as f64;
            out.extend(std::iter::repeat_n(mean, w.len()));
        }
        out
    }

    /// Mean arrival rate per step of `step` seconds (the forecaster's series); NaN
    /// (a gap, which the forecaster skips) for a step at least half inside a gap.
    pub fn step_series(&self, step: u64) -> Vec<f64> {
        let s = step.max(1) as usize;
        let mut unknown = vec![0usize; self.arrivals.len().div_ceil(s)];
        for g in &self.gaps {
            for second in g.start..g.start + g.seconds {
                if let Some(u) = unknown.get_mut(second as usize / s) {
                    *u += 1;
                }
            }
        }
        self.arrivals
            .chunks(s)
            .zip(unknown)
            .map(|(w, u)| {
                if 2 * u >= w.len() {
                    f64::NAN
                } else {
                    w.iter().sum::<f64>() / s as f64
                }
            })
            .collect()
    }

    /// Seconds inside gaps.
    pub fn gap_seconds(&self) -> u64 {
        self.gaps.iter().map(|g| g.seconds).sum()
    }

    /// Rows missing from an aggregated input.
    pub fn missing_rows(&self) -> u64 {
        self.gaps.iter().map(|g| g.missing_rows).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ts: f64, path: &str, bytes: u64) -> Record {
        Record::Request(Request {
            ts,
            method: "GET".into(),
            path: path.into(),
            status: 200,
            bytes,
            duration: None,
            upstream_time: None,
            source: Some("10.0.0.1".into()),
            request_bytes: None,
        })
    }

    fn model() -> ServiceModel {
        ServiceModel {
            base: Duration::from_millis(5),
            bytes_per_second: 1e6,
        }
    }

    #[test]
    fn counts_arrivals_per_second_and_spreads_rate_rows() {
        let mut b = Builder::new(model(), 60, None);
        b.add(&req(1000.2, "/a", 10));
        b.add(&req(1000.9, "/a", 10));
        b.add(&req(1003.0, "/b", 10));
        let t = b.finish();
        assert_eq!(t.start_unix, 1000);
        assert_eq!(t.arrivals, vec![2.0, 0.0, 0.0, 1.0]);
        assert_eq!(t.requests, 3);

        let mut b = Builder::new(model(), 60, None);
        b.add(&Record::Count {
            ts: 0.0,
            count: 600.0,
            interval: 300.0,
        });
        let t = b.finish();
        assert_eq!(t.arrivals.len(), 300);
        assert!(t.arrivals.iter().all(|a| (*a - 2.0).abs() < 1e-12));
        assert_eq!(t.step_series(60), vec![2.0; 5]);
        assert!(t.profile.is_none(), "a rate series has no request features");
    }

    #[test]
    fn demand_is_the_window_mean() {
        let t = Trace {
            start_unix: 0,
            arrivals: vec![4.0, 0.0, 0.0, 0.0, 2.0],
            requests: 6,
            interval: 0,
            timed_requests: 0,
            profile: None,
            gaps: Vec::new(),
            minutes: Vec::new(),
            usage: Default::default(),
            signature_bytes: Default::default(),
        };
        assert_eq!(t.demand(4), vec![1.0, 1.0, 1.0, 1.0, 0.5]);
    }

    #[test]
    fn request_logs_are_profiled_into_signatures() {
        let mut b = Builder::new(model(), 60, Some(4000));
        for i in 0..3000u64 {
            let ts = 1_000_000.0 + i as f64;
            if i % 3 == 0 {
                b.add(&req(ts, &format!("/images/{i}.png"), 2_000_000));
            } else {
                b.add(&req(ts, "/api/ping", 40));
            }
        }
        let t = b.finish();
        let p = t.profile.expect("profiled");
        assert!(p.refits >= 1);
        assert!(!p.view.signatures.is_empty());
        let total: u32 = p.mix.iter().flatten().sum();
        assert_eq!(total, 3000);
        // The profiler's minute buckets were all taken, once each, in order, and
        // after the first fit they hold the requests per signature.
        let minutes = &t.minutes;
        assert!(minutes.windows(2).all(|w| w[0].start < w[1].start));
        let requests: u64 = minutes.iter().map(|b| b.total.requests).sum();
        assert_eq!(requests, 3000);
        let classified: u64 = minutes
            .iter()
            .flat_map(|b| &b.by_signature)
            .filter(|(sig, _)| **sig != prescale_profiler::series::UNCLASSIFIED)
            .map(|(_, c)| c.requests)
            .sum();
        assert!(classified > 1500, "{classified} of 3000 classified");
    }

    #[test]
    fn missing_rows_of_a_rate_series_are_a_gap_not_zero_demand() {
        let test = "missing_rows_of_a_rate_series_are_a_gap_not_zero_demand";
        let Some(p) = crate::test_require::traces_dir()
            .parent()
            .map(|d| d.join("replay/elb_gap.csv"))
            .filter(|p| p.is_file())
            .or_else(|| {
                crate::test_require::unmet(test, "testdata/replay/elb_gap.csv is absent");
                None
            })
        else {
            return;
        };
        let mut reader = super::super::input::open(&p, &Default::default()).unwrap();
        let mut b = Builder::new(model(), 60, None);
        for r in reader.by_ref() {
            b.add(&r.unwrap());
        }
        let t = b.finish();
        // 11:29 is followed by 11:39: the 11:34 row is missing.
        assert_eq!(
            t.gaps,
            vec![Gap {
                start: 10 * 300,
                seconds: 300,
                missing_rows: 1
            }]
        );
        let series = t.step_series(300);
        let unknown: Vec<usize> = (0..series.len()).filter(|i| series[*i].is_nan()).collect();
        assert_eq!(unknown, vec![10]);
        assert!(series.iter().filter(|v| !v.is_nan()).all(|v| *v > 0.0));
    }

    #[test]
    fn a_silence_a_busy_log_makes_implausible_is_a_gap_and_a_quiet_logs_is_not() {
        // An hour at 1 request/s, two hours of nothing, an hour at 1/s: 7 200
        // expected requests missing, a gap.
        let mut b = Builder::new(model(), 60, None);
        let mut t = 1_000_000.0;
        for i in 0..7200 {
            if i == 3600 {
                t += 7200.0;
            }
            b.add(&req(t, "/a", 10));
            t += 1.0;
        }
        let trace = b.finish();
        assert_eq!(trace.gaps.len(), 1, "{:?}", trace.gaps);
        let g = trace.gaps[0];
        assert!(
            (7199..=7201).contains(&g.seconds) && g.missing_rows == 0,
            "{g:?}"
        );
        let series = trace.step_series(600);
        assert_eq!(series.iter().filter(|v| v.is_nan()).count(), 12);
        // One request every 10 minutes and a 40-minute lull: ordinary quiet.
        let mut b = Builder::new(model(), 60, None);
        let mut t = 1_000_000.0;
        for i in 0..100 {
            t += if i == 50 { 2400.0 } else { 600.0 };
            b.add(&req(t, "/a", 10));
        }
        assert!(b.finish().gaps.is_empty());
    }
}
