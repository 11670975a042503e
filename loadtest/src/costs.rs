//! Where a phase's time goes: CPU used by each part of the city over the
//! phase's wall time (the generator, the gateway, card-issuing, the
//! hospitals together and the busiest one, PostgreSQL and Redis), the
//! machine's busy and I/O-wait share, the load average, and PostgreSQL's
//! commits and WAL syncs. Read from `/proc` and PostgreSQL's statistics
//! before and after the phase, so a phase that is generator-bound, bound
//! by one saturated hospital process, by PostgreSQL or by fsync shows it.
//!
//! PostgreSQL and Redis are counted machine-wide (every `postgres` and
//! `redis-server` process), so other work on a shared machine is in them;
//! the commits are this run's databases' only (`jyt_loadtest_%`).

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::time::Instant;

/// Kernel clock ticks per second (`getconf CLK_TCK`; 100 on every Linux
/// this runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time of a process, in ticks (`utime + stime`, with its threads).
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields count from after its ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of stat(5), utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Ticks of every process whose command name is `comm`.
fn ticks_by_name(comm: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm))
        .filter_map(process_ticks)
        .sum()
}

/// The machine's (busy, iowait, total) ticks from `/proc/stat`.
fn machine_ticks() -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else {
        return (0, 0, 0);
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0);
    let iowait = v.get(4).copied().unwrap_or(0);
    (total - idle - iowait, iowait, total)
}

/// The 1, 5 and 15-minute load averages, as `/proc/loadavg` has them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The city's processes: (group, pid). Groups: `gateway`, `card-issuing`,
/// `slot-inventory <id>`; the generator is this process.
#[derive(Clone)]
pub struct Parts {
    processes: Vec<(String, u32)>,
}

struct Reading {
    at: Instant,
    by_process: Vec<u64>,
    generator: u64,
    postgres: u64,
    redis: u64,
    machine: (u64, u64, u64),
    commits: i64,
    wal_syncs: i64,
    load: String,
}

/// A phase's costs, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseCost {
    pub phase: String,
    pub wall_seconds: f64,
    /// Cores used on average over the phase (1.0 = one core busy all along).
    pub cores: BTreeMap<String, f64>,
    /// The busiest hospital process and its cores.
    pub busiest_hospital: (String, f64),
    /// Share of the machine's CPU time busy, and waiting on I/O.
    pub machine_busy: f64,
    pub machine_iowait: f64,
    /// This run's databases' commits, and the server's WAL syncs (fsyncs).
    pub commits: i64,
    pub wal_syncs: i64,
    pub load_average_before: String,
    pub load_average_after: String,
}

/// Measures one phase: [`Meter::start`] before, [`Meter::finish`] after.
pub struct Meter {
    parts: Parts,
    before: Reading,
}

impl Parts {
    pub fn new(processes: Vec<(String, u32)>) -> Self {
        Self { processes }
    }

    async fn read(&self, admin: &jyt_db::tokio_postgres::Client) -> Reading {
        let (commits, wal_syncs) = pg_counters(admin).await.unwrap_or((0, 0));
        Reading {
            at: Instant::now(),
            by_process: self
                .processes
                .iter()
                .map(|(_, pid)| process_ticks(*pid).unwrap_or(0))
                .collect(),
            generator: process_ticks(std::process::id()).unwrap_or(0),
            postgres: ticks_by_name("postgres"),
            redis: ticks_by_name("redis-server"),
            machine: machine_ticks(),
            commits,
            wal_syncs,
            load: load_average(),
        }
    }

    pub async fn start(&self, admin: &jyt_db::tokio_postgres::Client) -> Meter {
        Meter {
            parts: self.clone(),
            before: self.read(admin).await,
        }
    }
}

async fn pg_counters(admin: &jyt_db::tokio_postgres::Client) -> anyhow::Result<(i64, i64)> {
    let commits: i64 = admin
        .query_one(
            "SELECT coalesce(sum(xact_commit), 0)::bigint FROM pg_stat_database
              WHERE datname LIKE 'jyt\\_loadtest\\_%'",
            &[],
        )
        .await?
        .get(0);
    let syncs: i64 = admin
        .query_one("SELECT wal_sync FROM pg_stat_wal", &[])
        .await?
        .get(0);
    Ok((commits, syncs))
}

#[expect(clippy::cast_precision_loss, reason = "tick counts are far below 2^52")]
fn cores(ticks: u64, seconds: f64) -> f64 {
    (ticks as f64 / TICKS_PER_SECOND / seconds.max(1e-3) * 100.0).round() / 100.0
}

impl Meter {
    pub async fn finish(self, phase: &str, admin: &jyt_db::tokio_postgres::Client) -> PhaseCost {
        let after = self.parts.read(admin).await;
        let b = &self.before;
        let seconds = after.at.duration_since(b.at).as_secs_f64();
        let mut groups: BTreeMap<String, u64> = BTreeMap::new();
        let mut busiest = (String::new(), 0_u64);
        for (i, (name, _)) in self.parts.processes.iter().enumerate() {
            let used = after.by_process[i].saturating_sub(b.by_process[i]);
            let group = name.split_whitespace().next().unwrap_or(name).to_owned();
            if group == "slot-inventory" && used > busiest.1 {
                busiest = (name.clone(), used);
            }
            *groups.entry(group).or_insert(0) += used;
        }
        groups.insert(
            "generator (this process)".to_owned(),
            after.generator.saturating_sub(b.generator),
        );
        groups.insert(
            "postgres (machine-wide)".to_owned(),
            after.postgres.saturating_sub(b.postgres),
        );
        groups.insert(
            "redis (machine-wide)".to_owned(),
            after.redis.saturating_sub(b.redis),
        );
        let (busy, iowait, total) = (
            after.machine.0.saturating_sub(b.machine.0),
            after.machine.1.saturating_sub(b.machine.1),
            after.machine.2.saturating_sub(b.machine.2).max(1),
        );
        #[expect(clippy::cast_precision_loss, reason = "tick counts are far below 2^52")]
        let share = |x: u64| ((x as f64 / total as f64) * 1000.0).round() / 1000.0;
        PhaseCost {
            phase: phase.to_owned(),
            wall_seconds: (seconds * 10.0).round() / 10.0,
            cores: groups.into_iter().map(|(k, v)| (k, cores(v, seconds))).collect(),
            busiest_hospital: (busiest.0, cores(busiest.1, seconds)),
            machine_busy: share(busy),
            machine_iowait: share(iowait),
            commits: after.commits - b.commits,
            wal_syncs: after.wal_syncs - b.wal_syncs,
            load_average_before: b.load.clone(),
            load_average_after: after.load,
        }
    }
}

/// A connection to the server's admin database for the counters.
pub async fn admin() -> anyhow::Result<jyt_db::tokio_postgres::Client> {
    let (client, conn) =
        jyt_db::tokio_postgres::connect(&jyt_testkit::pg_admin_url(), jyt_db::tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// One line per phase: where its time went.
#[expect(clippy::print_stdout, reason = "the load test reports on stdout")]
pub fn print(costs: &[PhaseCost]) {
    for c in costs {
        let parts: Vec<String> = c.cores.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
        println!(
            "cost {:<45} {:>6.1} s  cores: {}; busiest hospital {} {:.2}; machine busy {:.0} % iowait {:.0} %; commits {} WAL syncs {}; load {} → {}",
            c.phase,
            c.wall_seconds,
            parts.join(", "),
            c.busiest_hospital.0,
            c.busiest_hospital.1,
            c.machine_busy * 100.0,
            c.machine_iowait * 100.0,
            c.commits,
            c.wal_syncs,
            c.load_average_before,
            c.load_average_after
        );
    }
}
