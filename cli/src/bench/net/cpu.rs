//! CPU accounting of a run: `/proc/stat` per CPU read at the window's edges (the orchestrator
//! sleeps alongside the client: it samples when the warm-up ends and when the window ends), the
//! idle baseline subtracted, the busy time split into user / system / softirq, and the agents' CPU
//! from `/proc/<pid>/stat`.

use anyhow::{Context as _, Result};
use ferry_bench::model::Cpu;

/// Jiffies of one CPU line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Times {
    user: u64,
    system: u64,
    softirq: u64,
    idle: u64,
}

impl Times {
    fn busy(&self) -> u64 {
        self.user + self.system + self.softirq
    }

    fn total(&self) -> u64 {
        self.busy() + self.idle
    }

    fn since(&self, before: &Times) -> Times {
        Times {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
            softirq: self.softirq.saturating_sub(before.softirq),
            idle: self.idle.saturating_sub(before.idle),
        }
    }
}

/// A reading of every CPU (and the agents) at one instant.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    /// Per CPU (`cpu0`, `cpu1`, ...).
    cpus: Vec<Times>,
    /// The agents' utime + stime, clock ticks.
    agents: u64,
}

/// Parses `/proc/stat`'s per-CPU lines: user nice system idle iowait irq softirq steal.
pub(crate) fn parse_stat(stat: &str) -> Vec<Times> {
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            let g = |i: usize| f.get(i).copied().unwrap_or(0);
            Times {
                user: g(0) + g(1),
                system: g(2) + g(7),
                softirq: g(5) + g(6),
                idle: g(3) + g(4),
            }
        })
        .collect()
}

/// utime + stime of a process, clock ticks (0 when it is gone).
fn proc_ticks(pid: i32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command (which may contain spaces) start after the last ')'.
    let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    let g = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    g(11) + g(12)
}

/// Reads `/proc/stat` and the agents' ticks now.
pub(crate) fn sample(agents: &[i32]) -> Result<Sample> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    Ok(Sample {
        cpus: parse_stat(&stat),
        agents: agents.iter().map(|p| proc_ticks(*p)).sum(),
    })
}

#[expect(clippy::cast_precision_loss, reason = "tick counts far below 2^52")]
fn secs(ticks: u64) -> f64 {
    ticks as f64 / ferry_sys::process::clock_ticks_per_second().max(1) as f64
}

/// Busy CPU seconds per second of wall time between two samples (the idle baseline's unit).
pub(crate) fn busy_rate(a: &Sample, b: &Sample, wall_s: f64) -> f64 {
    let busy: u64 = b
        .cpus
        .iter()
        .zip(&a.cpus)
        .map(|(b, a)| b.since(a).busy())
        .sum();
    if wall_s > 0.0 {
        secs(busy) / wall_s
    } else {
        0.0
    }
}

/// The CPU of a window from its edge samples, with `idle_rate` (busy CPU s per s while idle)
/// subtracted; `generator_s` from the client's own accounting.
pub(crate) fn window(a: &Sample, b: &Sample, wall_s: f64, idle_rate: f64, generator_s: f64) -> Cpu {
    let mut d = Times::default();
    let mut max_busy: f64 = 0.0;
    for (b, a) in b.cpus.iter().zip(&a.cpus) {
        let t = b.since(a);
        d.user += t.user;
        d.system += t.system;
        d.softirq += t.softirq;
        d.idle += t.idle;
        if t.total() > 0 {
            #[expect(clippy::cast_precision_loss, reason = "tick counts far below 2^52")]
            let share = t.busy() as f64 / t.total() as f64;
            max_busy = max_busy.max(share);
        }
    }
    let busy = secs(d.busy());
    let idle = idle_rate * wall_s;
    Cpu {
        net_s: (busy - idle).max(0.0),
        user_s: secs(d.user),
        system_s: secs(d.system),
        softirq_s: secs(d.softirq),
        generator_s,
        agent_s: secs(b.agents.saturating_sub(a.agents)),
        max_cpu_busy: max_busy,
    }
}

/// Adds the per-unit CPU metrics of a run: CPU s per Gbit (streams), CPU µs per transaction
/// (request/response) or per connection (crr, cc).
pub(crate) fn add_metrics(
    test: &str,
    cpu: &Cpu,
    window_s: f64,
    completed: u64,
    metrics: &mut std::collections::BTreeMap<String, f64>,
) {
    match test {
        "tcp_stream" | "udp_stream" | "udp_max_rate" => {
            let gbit = metrics.get("throughput_gbps").copied().unwrap_or(0.0) * window_s;
            if gbit > 0.0 {
                metrics.insert("cpu_s_per_gbit".into(), cpu.net_s / gbit);
            }
        }
        _ if completed > 0 => {
            #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
            let per = cpu.net_s * 1e6 / completed as f64;
            let name = if matches!(test, "tcp_crr" | "tcp_cc") {
                "cpu_us_per_conn"
            } else {
                "cpu_us_per_txn"
            };
            metrics.insert(name.into(), per);
        }
        _ => {}
    }
    metrics.insert("agent_cpu_s".into(), cpu.agent_s);
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_A: &str = "cpu  10 0 10 100 0 0 0 0 0 0\n\
        cpu0 5 0 5 50 0 0 0 0 0 0\n\
        cpu1 5 0 5 50 0 0 0 0 0 0\nintr 1\n";
    const STAT_B: &str = "cpu  200 0 60 120 0 0 40 0 0 0\n\
        cpu0 105 0 25 50 0 0 20 0 0 0\n\
        cpu1 95 0 35 70 0 0 20 0 0 0\nintr 1\n";

    #[test]
    fn parses_per_cpu_lines_only() {
        let t = parse_stat(STAT_A);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].busy(), 10);
        assert_eq!(t[0].idle, 50);
    }

    #[test]
    fn window_splits_busy_time_and_subtracts_the_idle_baseline() {
        let a = Sample {
            cpus: parse_stat(STAT_A),
            agents: 0,
        };
        let b = Sample {
            cpus: parse_stat(STAT_B),
            agents: 0,
        };
        let hz = secs(1);
        let cpu = window(&a, &b, 1.0, 0.0, 0.5);
        // busy: cpu0 100+20+20 = 140, cpu1 90+30+20 = 140 ticks
        assert!((cpu.net_s - 280.0 * hz).abs() < 1e-9);
        assert!((cpu.user_s - 190.0 * hz).abs() < 1e-9);
        assert!((cpu.softirq_s - 40.0 * hz).abs() < 1e-9);
        // cpu0: 140 busy of 140 total; cpu1: 140 of 160
        assert!((cpu.max_cpu_busy - 1.0).abs() < 1e-9);
        let with_idle = window(&a, &b, 1.0, 280.0 * hz / 2.0, 0.5);
        assert!((with_idle.net_s - 140.0 * hz).abs() < 1e-9);
        assert!((busy_rate(&a, &b, 2.0) - 140.0 * hz).abs() < 1e-9);
    }

    #[test]
    fn per_unit_metrics() {
        let cpu = Cpu {
            net_s: 2.0,
            ..Default::default()
        };
        let mut m = std::collections::BTreeMap::from([("throughput_gbps".to_string(), 10.0)]);
        add_metrics("tcp_stream", &cpu, 2.0, 0, &mut m);
        assert!((m["cpu_s_per_gbit"] - 0.1).abs() < 1e-12);
        let mut m = std::collections::BTreeMap::new();
        add_metrics("tcp_crr", &cpu, 2.0, 1000, &mut m);
        assert!((m["cpu_us_per_conn"] - 2000.0).abs() < 1e-9);
        add_metrics("tcp_rr", &cpu, 2.0, 0, &mut m);
        assert!(!m.contains_key("cpu_us_per_txn"));
    }
}
