//! Temporary stand-ins for `ferry_bench::report` (being written in parallel): a plain table, the
//! JSON file. Removed once it lands.

use anyhow::{Context as _, Result};
use ferry_bench::model::Report;
use std::path::{Path, PathBuf};

/// A plain table.
pub(crate) fn render(r: &Report) -> String {
    let mut s = String::new();
    for rs in &r.results {
        let main = ["throughput_gbps", "tps", "cps"]
            .iter()
            .find_map(|m| rs.summary.get(*m).map(|x| (*m, x)));
        let line = match main {
            Some((m, x)) => format!("{:.3} {m} [{:.3}-{:.3}] n={}", x.median, x.min, x.max, x.n),
            None => "no valid run".into(),
        };
        s.push_str(&format!("{:<40} {line}\n", rs.key()));
    }
    s
}

/// Writes the JSON report.
pub(crate) fn write_all(r: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let p = dir.join("report.json");
    std::fs::write(&p, serde_json::to_vec_pretty(r)?)?;
    Ok(vec![p])
}

/// A progress line.
pub(crate) fn progress(done: usize, total: usize, label: &str) -> String {
    format!("[{done}/{total}] {label}")
}

/// Compares two reports (stand-in: medians side by side).
pub(crate) fn compare(a: &Path, b: &Path, _fail_on: Option<&str>) -> Result<()> {
    let read = |p: &Path| -> Result<Report> {
        Ok(serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )?)
    };
    let (a, b) = (read(a)?, read(b)?);
    for ra in &a.results {
        let Some(rb) = b.results.iter().find(|r| r.key() == ra.key()) else {
            continue;
        };
        for (m, sa) in &ra.summary {
            if let Some(sb) = rb.summary.get(m) {
                println!("{} {m}: {:.3} -> {:.3}", ra.key(), sa.median, sb.median);
            }
        }
    }
    Ok(())
}
