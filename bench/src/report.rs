//! Results: rows, the goals stated as ratios, and the Markdown and JSON files.

use crate::subjects::Contender;
use anyhow::Result;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Serialize, Clone)]
pub struct Row {
    pub scenario: String,
    pub group: String,
    pub subject: String,
    pub samples: usize,
    pub median_us: f64,
    pub p99_us: f64,
    pub ops_per_sec: Option<f64>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e6
}

impl Row {
    pub fn latency(scenario: &str, c: &Contender, samples: &[Duration]) -> Row {
        let mut sorted = samples.to_vec();
        sorted.sort();
        Row {
            scenario: scenario.to_owned(),
            group: c.group.to_owned(),
            subject: c.label.clone(),
            samples: sorted.len(),
            median_us: percentile(&sorted, 0.5),
            p99_us: percentile(&sorted, 0.99),
            ops_per_sec: None,
        }
    }

    pub fn throughput(scenario: &str, c: &Contender, ops: f64, samples: &[Duration]) -> Row {
        Row {
            ops_per_sec: Some(ops),
            ..Row::latency(scenario, c, samples)
        }
    }
}

/// A goal of the benchmark, checked against the rows of the same run.
pub enum Goal {
    /// median(a) / median(b) <= max.
    LatencyRatio { title: String, scenario: String, a: (String, String), b: (String, String), max: f64 },
    /// ops(a) >= ops(b).
    ThroughputAtLeast { title: String, scenario: String, a: (String, String), b: (String, String) },
    /// our hand-off median <= rtts × the group's server round trip.
    HandoffRtts { title: String, group: String, rtts: f64 },
    /// median(a) / median(b) <= max, each (scenario, group, subject).
    Across { title: String, a: (String, String, String), b: (String, String, String), max: f64 },
    /// median(a) < limit.
    Absolute { title: String, scenario: String, a: (String, String), limit: Duration },
    /// ops(a) >= min × ops(b), each (scenario, group, subject).
    OpsAcross { title: String, a: (String, String, String), b: (String, String, String), min: f64 },
    /// ops(a) >= ops.
    OpsAtLeast { title: String, scenario: String, a: (String, String), ops: f64 },
}

fn pair((g, s): (&str, &str)) -> (String, String) {
    (g.to_owned(), s.to_owned())
}

impl Goal {
    pub fn latency_ratio(title: &str, scenario: &str, a: (&str, &str), b: (&str, &str), max: f64) -> Goal {
        Goal::LatencyRatio { title: title.into(), scenario: scenario.into(), a: pair(a), b: pair(b), max }
    }
    pub fn throughput_at_least(title: &str, scenario: &str, a: (&str, &str), b: (&str, &str)) -> Goal {
        Goal::ThroughputAtLeast { title: title.into(), scenario: scenario.into(), a: pair(a), b: pair(b) }
    }
    pub fn handoff_rtts(title: &str, group: &str, rtts: f64) -> Goal {
        Goal::HandoffRtts { title: title.into(), group: group.into(), rtts }
    }
    pub fn across(title: &str, a: (&str, &str, &str), b: (&str, &str, &str), max: f64) -> Goal {
        let triple = |(x, y, z): (&str, &str, &str)| (x.to_owned(), y.to_owned(), z.to_owned());
        Goal::Across { title: title.into(), a: triple(a), b: triple(b), max }
    }
    pub fn absolute(title: &str, scenario: &str, a: (&str, &str), limit: Duration) -> Goal {
        Goal::Absolute { title: title.into(), scenario: scenario.into(), a: pair(a), limit }
    }
    pub fn ops_across(title: &str, a: (&str, &str, &str), b: (&str, &str, &str), min: f64) -> Goal {
        let triple = |(x, y, z): (&str, &str, &str)| (x.to_owned(), y.to_owned(), z.to_owned());
        Goal::OpsAcross { title: title.into(), a: triple(a), b: triple(b), min }
    }
    pub fn ops_at_least(title: &str, scenario: &str, a: (&str, &str), ops: f64) -> Goal {
        Goal::OpsAtLeast { title: title.into(), scenario: scenario.into(), a: pair(a), ops }
    }
}

#[derive(Serialize)]
pub struct GoalResult {
    pub goal: String,
    pub measured: String,
    pub target: String,
    pub met: Option<bool>,
}

#[derive(Serialize)]
pub struct Report {
    pub machine: String,
    pub round_trips_us: Vec<(String, f64)>,
    pub rows: Vec<Row>,
    pub goals: Vec<GoalResult>,
}

impl Report {
    pub fn new() -> Report {
        Report { machine: machine(), round_trips_us: Vec::new(), rows: Vec::new(), goals: Vec::new() }
    }

    pub fn rtt(&mut self, group: &str, rtt: Duration) {
        self.round_trips_us.push((group.to_owned(), rtt.as_secs_f64() * 1e6));
    }

    pub fn push(&mut self, row: Row) {
        eprintln!(
            "  {:<28} {:<10} {:<40} median {:>10.1} µs  p99 {:>10.1} µs{}",
            row.scenario,
            row.group,
            row.subject,
            row.median_us,
            row.p99_us,
            row.ops_per_sec.map(|o| format!("  {o:>10.0} ops/s")).unwrap_or_default()
        );
        self.rows.push(row);
    }

    fn find(&self, scenario: &str, (group, subject): &(String, String)) -> Option<&Row> {
        self.rows.iter().find(|r| r.scenario == scenario && &r.group == group && &r.subject == subject)
    }

    pub fn goals(&mut self, goals: &[Goal]) {
        let mut results = Vec::new();
        for goal in goals {
            let result = match goal {
                Goal::LatencyRatio { title, scenario, a, b, max } => {
                    match (self.find(scenario, a), self.find(scenario, b)) {
                        (Some(a), Some(b)) => {
                            let ratio = a.median_us / b.median_us;
                            GoalResult { goal: title.clone(), measured: format!("{ratio:.2}x ({:.0} / {:.0} µs)", a.median_us, b.median_us), target: format!("<= {max}x"), met: Some(ratio <= *max) }
                        }
                        _ => missing(title),
                    }
                }
                Goal::ThroughputAtLeast { title, scenario, a, b } => {
                    match (self.find(scenario, a), self.find(scenario, b)) {
                        (Some(a), Some(b)) => {
                            let (x, y) = (a.ops_per_sec.unwrap_or(0.0), b.ops_per_sec.unwrap_or(f64::MAX));
                            GoalResult { goal: title.clone(), measured: format!("{:.2}x ({x:.0} / {y:.0} ops/s)", x / y), target: ">= 1x".into(), met: Some(x >= y) }
                        }
                        _ => missing(title),
                    }
                }
                Goal::HandoffRtts { title, group, rtts } => {
                    let rtt = self.round_trips_us.iter().find(|(g, _)| g == group).map(|(_, r)| *r);
                    let row = self.rows.iter().find(|r| r.scenario == "contended hand-off" && &r.group == group && r.subject.starts_with("ours"));
                    // The in-process floor: tokio::sync's own hand-off.
                    let floor = self
                        .rows
                        .iter()
                        .find(|r| r.scenario == "contended hand-off" && r.group == "memory" && r.subject.starts_with("tokio"))
                        .map_or(0.0, |r| r.median_us);
                    match (rtt, row) {
                        (Some(rtt), Some(row)) => {
                            let n = (row.median_us - floor).max(0.0) / rtt;
                            GoalResult { goal: title.clone(), measured: format!("tokio + {n:.1} round trips ({:.0} µs, tokio {floor:.0} µs, RTT {rtt:.0} µs)", row.median_us), target: format!("<= tokio + {rtts} RTT"), met: Some(n <= *rtts) }
                        }
                        _ => missing(title),
                    }
                }
                Goal::Across { title, a, b, max } => {
                    let find = |(scenario, group, subject): &(String, String, String)| self.find(scenario, &(group.clone(), subject.clone()));
                    match (find(a), find(b)) {
                        (Some(x), Some(y)) => {
                            let ratio = x.median_us / y.median_us;
                            GoalResult { goal: title.clone(), measured: format!("{ratio:.2}x ({:.0} / {:.0} µs)", x.median_us, y.median_us), target: format!("<= {max}x"), met: Some(ratio <= *max) }
                        }
                        _ => missing(title),
                    }
                }
                Goal::Absolute { title, scenario, a, limit } => match self.find(scenario, a) {
                    Some(a) => {
                        let limit_us = limit.as_secs_f64() * 1e6;
                        GoalResult { goal: title.clone(), measured: format!("{:.2} µs", a.median_us), target: format!("< {limit_us} µs"), met: Some(a.median_us < limit_us) }
                    }
                    None => missing(title),
                },
                Goal::OpsAcross { title, a, b, min } => {
                    let find = |(scenario, group, subject): &(String, String, String)| self.find(scenario, &(group.clone(), subject.clone()));
                    match (find(a), find(b)) {
                        (Some(x), Some(y)) => {
                            let (x, y) = (x.ops_per_sec.unwrap_or(0.0), y.ops_per_sec.unwrap_or(f64::MAX));
                            GoalResult { goal: title.clone(), measured: format!("{:.2}x ({x:.0} / {y:.0} ops/s)", x / y), target: format!(">= {min}x"), met: Some(x >= min * y) }
                        }
                        _ => missing(title),
                    }
                }
                Goal::OpsAtLeast { title, scenario, a, ops } => match self.find(scenario, a) {
                    Some(a) => {
                        let x = a.ops_per_sec.unwrap_or(0.0);
                        GoalResult { goal: title.clone(), measured: format!("{x:.0} ops/s"), target: format!(">= {ops:.0} ops/s"), met: Some(x >= *ops) }
                    }
                    None => missing(title),
                },
            };
            results.push(result);
        }
        self.goals = results;
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "Machine: {}\n", self.machine);
        if !self.round_trips_us.is_empty() {
            let rtts: Vec<String> = self.round_trips_us.iter().map(|(g, r)| format!("{g} {r:.0} µs")).collect();
            let _ = writeln!(md, "Server round trips (median): {}\n", rtts.join(", "));
        }
        let _ = writeln!(md, "| goal | measured | target | met |\n|---|---|---|---|");
        for g in &self.goals {
            let met = match g.met { Some(true) => "yes", Some(false) => "**no**", None => "not measured" };
            let _ = writeln!(md, "| {} | {} | {} | {met} |", g.goal, g.measured, g.target);
        }
        let mut scenario = "";
        for row in &self.rows {
            if row.scenario != scenario {
                scenario = &row.scenario;
                let _ = writeln!(md, "\n### {scenario}\n\n| group | subject | median | p99 | ops/s |\n|---|---|---|---|---|");
            }
            let ops = row.ops_per_sec.map(|o| format!("{o:.0}")).unwrap_or_else(|| "-".into());
            let _ = writeln!(md, "| {} | {} | {} | {} | {ops} |", row.group, row.subject, us(row.median_us), us(row.p99_us));
        }
        md
    }

    pub fn write(&self, dir: PathBuf) -> Result<()> {
        std::fs::create_dir_all(&dir)?;
        let md = self.markdown();
        std::fs::write(dir.join("latest.md"), &md)?;
        std::fs::write(dir.join("latest.json"), serde_json::to_string_pretty(self)?)?;
        println!("{md}");
        println!("written: {} and latest.json", dir.join("latest.md").display());
        Ok(())
    }
}

fn us(v: f64) -> String {
    if v >= 1000.0 { format!("{:.2} ms", v / 1000.0) } else { format!("{v:.1} µs") }
}

fn missing(title: &str) -> GoalResult {
    GoalResult { goal: title.to_owned(), measured: "-".into(), target: "-".into(), met: None }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0)))
        .unwrap_or(0);
    format!("{cpu}, {cores} cores, {:.0} GiB RAM", mem as f64 / 1048576.0)
}
