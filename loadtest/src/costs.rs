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
    /// The gateway's base URL, for its `/metrics` (the attempts it answered
    /// sold out from a mark, without a hop).
    gateway: Option<String>,
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
    gateway_sold_out_answers: u64,
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
    /// Booking attempts the gateway answered `SLOT_SOLD_OUT` itself, from a
    /// sold-out mark, without a hop to a hospital.
    pub gateway_sold_out_answers: u64,
    pub load_average_before: String,
    pub load_average_after: String,
    /// The statements that took most of PostgreSQL's time in the phase
    /// (`pg_stat_statements`, when the server preloads it; empty otherwise).
    pub statements: Vec<StatementCost>,
}

/// One statement's share of a phase, from `pg_stat_statements`.
#[derive(Debug, Clone, Serialize)]
pub struct StatementCost {
    pub calls: i64,
    pub total_ms: f64,
    pub rows: i64,
    /// Plans made and the time spent planning (with
    /// `pg_stat_statements.track_planning`; 0 without): a statement sent as
    /// text is planned on every call, a prepared one settles on a generic
    /// plan.
    pub plans: i64,
    pub plan_ms: f64,
    /// The normalised text, cut to 120 characters.
    pub query: String,
}

/// How many statements each phase reports.
const TOP_STATEMENTS: i64 = 12;

/// Measures one phase: [`Meter::start`] before, [`Meter::finish`] after.
pub struct Meter {
    parts: Parts,
    before: Reading,
}

impl Parts {
    pub fn new(processes: Vec<(String, u32)>) -> Self {
        Self {
            processes,
            gateway: None,
        }
    }

    /// Also read the gateway's sold-out answers from `gateway`'s `/metrics`.
    pub fn with_gateway(mut self, gateway: &str) -> Self {
        self.gateway = Some(gateway.to_owned());
        self
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
            gateway_sold_out_answers: match &self.gateway {
                Some(url) => gateway_sold_out_answers(url).await.unwrap_or(0),
                None => 0,
            },
        }
    }

    pub async fn start(&self, admin: &jyt_db::tokio_postgres::Client) -> Meter {
        // Each phase counts its own statements; without the extension there
        // is nothing to reset and the phase reports none.
        let _ = admin.batch_execute("SELECT pg_stat_statements_reset()").await;
        Meter {
            parts: self.clone(),
            before: self.read(admin).await,
        }
    }
}

/// The gateway's `jyt_gateway_sold_out_answers_total`.
async fn gateway_sold_out_answers(gateway: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{gateway}/metrics")).await?.text().await?;
    Ok(jyt_testkit::counter_sum(
        &text,
        "jyt_gateway_sold_out_answers_total",
        &[],
    ))
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

/// This run's databases' statements by total time since the phase began,
/// each statement's figures summed over the databases (20 hospitals run the
/// same statements), the first entry being all statements together.
async fn top_statements(admin: &jyt_db::tokio_postgres::Client) -> Vec<StatementCost> {
    let rows = admin
        .query(
            "WITH ours AS (
                 SELECT s.calls, s.total_exec_time, s.rows, s.plans, s.total_plan_time,
                        left(regexp_replace(s.query, '\\s+', ' ', 'g'), 120) AS query
                   FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                  WHERE d.datname LIKE 'jyt\\_loadtest\\_%'),
             summed AS (
                 SELECT sum(calls)::bigint AS calls, sum(total_exec_time) AS ms,
                        sum(rows)::bigint AS rows, sum(plans)::bigint AS plans,
                        sum(total_plan_time) AS plan_ms, query
                   FROM ours GROUP BY query)
             (SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(ms), 0), coalesce(sum(rows), 0)::bigint,
                     coalesce(sum(plans), 0)::bigint, coalesce(sum(plan_ms), 0), '(all statements)' FROM summed)
             UNION ALL
             (SELECT calls, ms, rows, plans, plan_ms, query FROM summed ORDER BY ms DESC LIMIT $1)",
            &[&TOP_STATEMENTS],
        )
        .await
        .unwrap_or_default();
    rows.iter()
        .map(|r| StatementCost {
            calls: r.get(0),
            total_ms: (r.get::<_, f64>(1) * 10.0).round() / 10.0,
            rows: r.get(2),
            plans: r.get(3),
            plan_ms: (r.get::<_, f64>(4) * 10.0).round() / 10.0,
            query: r.get(5),
        })
        .collect()
}

#[expect(clippy::cast_precision_loss, reason = "tick counts are far below 2^52")]
fn cores(ticks: u64, seconds: f64) -> f64 {
    (ticks as f64 / TICKS_PER_SECOND / seconds.max(1e-3) * 100.0).round() / 100.0
}

impl Meter {
    pub async fn finish(self, phase: &str, admin: &jyt_db::tokio_postgres::Client) -> PhaseCost {
        let after = self.parts.read(admin).await;
        let statements = top_statements(admin).await;
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
            gateway_sold_out_answers: after
                .gateway_sold_out_answers
                .saturating_sub(b.gateway_sold_out_answers),
            load_average_before: b.load.clone(),
            load_average_after: after.load,
            statements,
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
            "cost {:<45} {:>6.1} s  cores: {}; busiest hospital {} {:.2}; machine busy {:.0} % iowait {:.0} %; commits {} WAL syncs {}; sold out at the gateway {}; load {} → {}",
            c.phase,
            c.wall_seconds,
            parts.join(", "),
            c.busiest_hospital.0,
            c.busiest_hospital.1,
            c.machine_busy * 100.0,
            c.machine_iowait * 100.0,
            c.commits,
            c.wal_syncs,
            c.gateway_sold_out_answers,
            c.load_average_before,
            c.load_average_after
        );
        for st in &c.statements {
            #[expect(clippy::cast_precision_loss, reason = "call counts are far below 2^52")]
            let mean = st.total_ms / (st.calls.max(1) as f64);
            println!(
                "    sql {:>8} calls {:>10.1} ms ({:>6.2} ms each) {:>8} rows {:>8} plans {:>8.1} ms planning  {}",
                st.calls, st.total_ms, mean, st.rows, st.plans, st.plan_ms, st.query
            );
        }
    }
}
