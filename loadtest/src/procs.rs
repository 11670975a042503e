//! The city's services as processes of their own, so that each one's
//! resident memory can be read from `/proc`: `loadtest serve <role>` runs
//! exactly the library code of the service's own binary
//! (`Application::build` with settings from `JYT_*` environment variables,
//! as `target/release/{gateway,slot-inventory,card-issuing}` do), on a
//! 2-worker tokio runtime like theirs. Only the hospitals differ: their
//! clock is manual and moved by the parent over stdin (`clock <RFC 3339>`,
//! answered `ok`), which the real binary cannot do; the parent moves the
//! day from the release to the visits with it. The child stops when its
//! stdin closes (the parent ended) or when it is killed.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use jyt_domain::time::Clock;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout, Command};

use crate::city::sources;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Hospital,
    /// Every hospital of the city in one process, on one server sized for
    /// the cores, as `jyt up` runs them (issue 20).
    Hospitals,
    Gateway,
    Cards,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Hospital => "hospital",
            Role::Hospitals => "hospitals",
            Role::Gateway => "gateway",
            Role::Cards => "cards",
        }
    }
}

pub const CLOCK: &str = "LOADTEST_CLOCK";
const VISIT_DATE: &str = "LOADTEST_VISIT_DATE";
const CAPACITY: &str = "LOADTEST_CAPACITY";
/// [`Role::Hospitals`]: each hospital's `JYT_*` settings, a JSON list of
/// `[name, value]` lists per hospital (one process environment cannot
/// hold twenty hospitals' `JYT_SLOT_INVENTORY__*`).
const HOSPITAL_SETTINGS: &str = "LOADTEST_HOSPITAL_SETTINGS";

/// [`Role::Hospitals`]'s environment: every hospital's settings, and the
/// clock and day they share.
pub fn hospitals_env(
    settings: &[Vec<(String, String)>],
    clock: DateTime<Utc>,
    visit_date: NaiveDate,
    capacity: i32,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut env = hospital_env(clock, visit_date, capacity);
    env.push((HOSPITAL_SETTINGS.to_owned(), serde_json::to_string(settings)?));
    Ok(env)
}

/// What a hospital child needs beyond its settings: its clock's start and
/// the day to seed.
pub fn hospital_env(clock: DateTime<Utc>, visit_date: NaiveDate, capacity: i32) -> Vec<(String, String)> {
    vec![
        (CLOCK.to_owned(), clock.to_rfc3339()),
        (VISIT_DATE.to_owned(), visit_date.to_string()),
        (CAPACITY.to_owned(), capacity.to_string()),
    ]
}

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

/// A hospital child's side: move its clock when told (`clock <RFC 3339>`,
/// answered `ok`), until stdin closes.
async fn follow_clock(mut lines: tokio::io::Lines<BufReader<tokio::io::Stdin>>, clock: Clock) {
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(at) = line.strip_prefix("clock ")
            && let Ok(at) = at.parse::<DateTime<Utc>>()
        {
            clock.set(at);
            announce("ok");
        }
    }
}

/// The child's side: run one service until stdin closes.
pub async fn serve(role: Role) -> anyhow::Result<()> {
    let env = sources(std::env::vars().filter(|(k, _)| k.starts_with("JYT_")).collect());
    let lines = BufReader::new(tokio::io::stdin()).lines();
    match role {
        Role::Hospital => {
            let clock = Clock::manual(var(CLOCK)?.parse()?);
            let (visit_date, capacity) = (var(VISIT_DATE)?.parse()?, var(CAPACITY)?.parse()?);
            let settings = slot_inventory::Settings::load_from(&env)?;
            let app = crate::city::seeded_hospital(settings, clock.clone(), visit_date, capacity)
                .await?
                .serve()?;
            announce(&format!("port {}", app.port()));
            tokio::select! {
                r = app.run_until_stopped() => r?,
                () = follow_clock(lines, clock) => {}
            }
        }
        Role::Hospitals => {
            let clock = Clock::manual(var(CLOCK)?.parse()?);
            let (visit_date, capacity) = (var(VISIT_DATE)?.parse()?, var(CAPACITY)?.parse()?);
            let every: Vec<Vec<(String, String)>> = serde_json::from_str(&var(HOSPITAL_SETTINGS)?)?;
            let mut hospitals = Vec::with_capacity(every.len());
            for env in every {
                let settings = slot_inventory::Settings::load_from(&sources(env))?;
                hospitals
                    .push(crate::city::seeded_hospital(settings, clock.clone(), visit_date, capacity).await?);
            }
            let ports: Vec<String> = hospitals.iter().map(|h| h.port().to_string()).collect();
            let served = slot_inventory::serve_together(crate::city::HOSPITAL_WORKERS, hospitals)?;
            announce(&format!("ports {}", ports.join(",")));
            tokio::select! {
                r = served.run_until_stopped() => r?,
                () = follow_clock(lines, clock) => {}
            }
        }
        Role::Gateway => {
            // On the hospitals' clock when given one (its notices fall due
            // by it), else the system's.
            let clock = match std::env::var(CLOCK) {
                Ok(at) => Clock::manual(at.parse()?),
                Err(_) => Clock::System,
            };
            let app =
                gateway::Application::build_with_clock(gateway::Settings::load_from(&env)?, clock.clone())
                    .await?;
            announce(&format!("port {}", app.port()));
            tokio::select! {
                r = app.run_until_stopped() => r?,
                () = follow_clock(lines, clock) => {}
            }
        }
        Role::Cards => {
            let app = card_issuing::Application::build(card_issuing::Settings::load_from(&env)?).await?;
            announce(&format!("port {}", app.port()));
            tokio::select! {
                r = app.run_until_stopped() => r?,
                () = until_closed(lines) => {}
            }
        }
    }
    Ok(())
}

async fn until_closed(mut lines: tokio::io::Lines<BufReader<tokio::io::Stdin>>) {
    while let Ok(Some(_)) = lines.next_line().await {}
}

#[expect(clippy::print_stdout, reason = "the child answers its parent on stdout")]
fn announce(line: &str) {
    println!("{line}");
}

/// The parent's handle on one child service.
pub struct Service {
    /// The first (or only) service's port.
    pub port: u16,
    /// Every port, in the order the services were given ([`Role::Hospitals`]).
    pub ports: Vec<u16>,
    pub pid: u32,
    child: std::sync::Mutex<tokio::process::Child>,
    io: tokio::sync::Mutex<(ChildStdin, tokio::io::Lines<BufReader<ChildStdout>>)>,
}

/// `LOADTEST_WRAP_<ROLE>` (`LOADTEST_WRAP_HOSPITALS`, `..._GATEWAY`,
/// ...): a program the child of that role is started under, given the
/// load test's own path and `serve <role>`, as a heap profiler is
/// (`loadtest/heap-profile.sh`). The child's first line on stdout must
/// still be its port, so the wrapper keeps its own chatter off stdout.
fn wrapper_variable(role: Role) -> String {
    format!("LOADTEST_WRAP_{}", role.as_str().to_uppercase())
}

impl Service {
    /// Start `loadtest serve <role>` with `env` and wait for its port.
    pub async fn spawn(role: Role, name: &str, env: Vec<(String, String)>) -> anyhow::Result<Self> {
        Self::spawn_with_priority(role, name, env, None).await
    }

    /// [`Service::spawn`], under `chrt -f <priority>` when one is given:
    /// every thread of the child runs in the real-time FIFO class.
    pub async fn spawn_with_priority(
        role: Role,
        name: &str,
        env: Vec<(String, String)>,
        realtime_priority: Option<u8>,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut command = match realtime_priority {
            Some(priority) => {
                let mut c = Command::new("chrt");
                c.args(["-f", &priority.to_string()]).arg(&exe);
                c
            }
            None => match std::env::var_os(wrapper_variable(role)) {
                Some(wrapper) => {
                    let mut c = Command::new(wrapper);
                    c.arg(&exe);
                    c
                }
                None => Command::new(&exe),
            },
        };
        let mut child = command
            .args(["serve", role.as_str()])
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = child.id().context("the child has no pid")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let first = tokio::time::timeout(Duration::from_secs(300), lines.next_line())
            .await
            .with_context(|| format!("{name} did not start in 300 s"))??
            .with_context(|| format!("{name} exited before it listened"))?;
        let ports: Vec<u16> = first
            .strip_prefix("port ")
            .or_else(|| first.strip_prefix("ports "))
            .and_then(|p| p.split(',').map(|p| p.parse().ok()).collect())
            .with_context(|| format!("{name} said {first:?}"))?;
        Ok(Self {
            port: *ports.first().with_context(|| format!("{name} named no port"))?,
            ports,
            pid,
            child: std::sync::Mutex::new(child),
            io: tokio::sync::Mutex::new((stdin, lines)),
        })
    }

    /// Move a hospital child's clock; returns once it has.
    pub async fn set_clock(&self, at: DateTime<Utc>) -> anyhow::Result<()> {
        let mut io = self.io.lock().await;
        io.0.write_all(format!("clock {}\n", at.to_rfc3339()).as_bytes())
            .await?;
        io.0.flush().await?;
        let answer = tokio::time::timeout(Duration::from_secs(30), io.1.next_line())
            .await
            .context("no answer to a clock move")??;
        anyhow::ensure!(answer.as_deref() == Some("ok"), "clock move answered {answer:?}");
        Ok(())
    }

    pub fn kill(&self) {
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = child.start_kill() {
            tracing::warn!(error = %e, pid = self.pid, "could not stop a service process");
        }
    }
}

/// Resident memory of a process, from `/proc/<pid>/status`: (VmRSS, VmHWM) in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Resident memory of one service over a run.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub service: String,
    pub processes: usize,
    /// The highest VmRSS sampled (every 250 ms) in any of its processes.
    pub max_rss_mb: f64,
    /// The kernel's high-water mark (VmHWM), the highest of its processes.
    pub peak_hwm_mb: f64,
    /// (seconds since sampling began, the highest RSS of its processes then).
    pub timeline: Vec<(f64, f64)>,
}

/// A task that samples something every `period` (the first at once)
/// until it is stopped, then hands back what it gathered: the shape of
/// every sampler of the load test ([`Sampler`], the surge's hop counts).
pub struct Periodic<T> {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<T>,
}

impl<T: Default + Send + 'static> Periodic<T> {
    /// Call `sample(&mut gathered, stopping)` at every tick, with
    /// `stopping` true once more when [`Periodic::stop`] is called.
    pub fn start(
        period: Duration,
        mut gathered: T,
        mut sample: impl FnMut(&mut T, bool) + Send + 'static,
    ) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                let stopping = tokio::select! {
                    _ = tick.tick() => false,
                    _ = &mut stopped => true,
                };
                sample(&mut gathered, stopping);
                if stopping {
                    return gathered;
                }
            }
        });
        Self { stop, task }
    }

    /// Stop sampling; what was gathered.
    pub async fn stop(self) -> T {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// The service a process belongs to: `slot-inventory h01` → `slot-inventory`.
fn service_of(name: &str) -> &str {
    name.split_whitespace().next().unwrap_or(name)
}

#[expect(clippy::cast_precision_loss, reason = "KiB counts are far below 2^52")]
fn mb(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// Samples every 250 ms until stopped.
pub struct Sampler(Periodic<BTreeMap<String, Memory>>);

impl Sampler {
    pub fn start(processes: Vec<(String, u32)>) -> Self {
        let began = std::time::Instant::now();
        let mut by: BTreeMap<String, Memory> = BTreeMap::new();
        for (name, _) in &processes {
            let m = by.entry(service_of(name).to_owned()).or_insert_with(|| Memory {
                service: service_of(name).to_owned(),
                processes: 0,
                max_rss_mb: 0.0,
                peak_hwm_mb: 0.0,
                timeline: Vec::new(),
            });
            m.processes += 1;
        }
        Self(Periodic::start(
            Duration::from_millis(250),
            by,
            move |by, stopping| {
                if stopping {
                    return;
                }
                let mut now: HashMap<&str, (u64, u64)> = HashMap::new();
                for (name, pid) in &processes {
                    if let Some((rss, hwm)) = rss_kib(*pid) {
                        let e = now.entry(service_of(name)).or_insert((0, 0));
                        *e = (e.0.max(rss), e.1.max(hwm));
                    }
                }
                let at = (began.elapsed().as_secs_f64() * 10.0).round() / 10.0;
                for (service, (rss, hwm)) in now {
                    if let Some(m) = by.get_mut(service) {
                        m.max_rss_mb = m.max_rss_mb.max(mb(rss));
                        m.peak_hwm_mb = m.peak_hwm_mb.max(mb(hwm));
                        m.timeline.push((at, mb(rss)));
                    }
                }
            },
        ))
    }

    pub async fn finish(self) -> Vec<Memory> {
        self.0.stop().await.into_values().collect()
    }
}
