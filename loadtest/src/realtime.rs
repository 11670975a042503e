//! Real-time (SCHED_FIFO) scheduling for the parts of a scenario that, on a
//! cluster, would have CPU of their own: the search replica (its pods have
//! CPU requests in the chart), the patients' generator (they are not on the
//! servers' machine) and Redis (a server of its own). On the 2-core load
//! machine they otherwise wait in the run queue behind the surge's ~70 busy
//! threads, and that wait, not their work, is what a tail latency measures.
//!
//! Done with `chrt` (util-linux) rather than `libc::sched_setscheduler`
//! because the workspace forbids `unsafe`; it needs root or `CAP_SYS_NICE`.
//! FIFO threads that sleep on I/O, as all of these do, leave the CPU to the
//! others between requests, so the surge still gets every idle cycle.

use anyhow::Context as _;

/// Run `chrt` with `args`; fail with its stderr if it fails.
fn chrt(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("chrt")
        .args(args)
        .output()
        .context("running chrt (util-linux)")?;
    anyhow::ensure!(
        out.status.success(),
        "chrt {} failed ({}): {}; real-time priority needs root or CAP_SYS_NICE",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Put the calling thread in the real-time FIFO class at `priority`.
pub fn make_this_thread_realtime(priority: u8) -> anyhow::Result<()> {
    // `/proc/thread-self` links to `<pid>/task/<tid>`.
    let me = std::fs::read_link("/proc/thread-self")?;
    let tid = me
        .file_name()
        .and_then(|t| t.to_str())
        .ok_or_else(|| anyhow::anyhow!("no thread id in {me:?}"))?
        .to_owned();
    chrt(&["-f", "-p", &priority.to_string(), &tid])
}

/// The Redis server, raised to the FIFO class for as long as this value
/// lives, and put back in the normal class (`SCHED_OTHER`, as the machine
/// starts it) when it is dropped, also when the scenario fails.
pub struct RealtimeRedis {
    pid: u32,
}

impl RealtimeRedis {
    /// Raise every thread of the load test's Redis server to `priority`.
    /// Redis must run on this machine: its pid comes from `INFO server` and
    /// is checked against `/proc/<pid>/comm`.
    pub async fn raise(priority: u8) -> anyhow::Result<Self> {
        let mut conn = crate::city::redis_connection().await?;
        let info: String = jyt_cache::redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await?;
        let pid: u32 = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .ok_or_else(|| anyhow::anyhow!("INFO server has no process_id"))?
            .trim()
            .parse()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .with_context(|| format!("Redis (pid {pid}) is not a process on this machine"))?;
        anyhow::ensure!(
            comm.trim().starts_with("redis-server"),
            "pid {pid} from INFO server is {:?} here, not redis-server: Redis runs elsewhere",
            comm.trim()
        );
        chrt(&["-a", "-f", "-p", &priority.to_string(), &pid.to_string()])?;
        tracing::warn!(
            pid,
            priority,
            "Redis raised to real-time priority for this scenario"
        );
        Ok(Self { pid })
    }
}

impl Drop for RealtimeRedis {
    fn drop(&mut self) {
        match chrt(&["-a", "-o", "-p", "0", &self.pid.to_string()]) {
            Ok(()) => tracing::warn!(pid = self.pid, "Redis back in the normal scheduling class"),
            Err(e) => {
                tracing::error!(pid = self.pid, error = %e, "could not put Redis back in the normal class")
            }
        }
    }
}
