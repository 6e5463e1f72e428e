//! The one runner of every table: calls are measured (from workers at a concurrency, page after
//! page, or service and floor alternating), summed up into `Figures` (`calls.rs`), and each row of a
//! [`Table`] compares a service's figures with its floor's in the table's columns.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Result, bail, ensure};

use crate::calls::{Call, Figures};
use crate::qstash_sink::Sink;
use crate::service::Jobs;

/// Unmeasured calls of each kind before the measured ones (connections, caches).
pub const WARM_UP: usize = 3;

/// `call(i)` for i = 0, 1, 2, … from `concurrency` workers at once, until it answers `None`
/// or `deadline` passes.
pub async fn drive<F, Fut>(
    concurrency: usize,
    deadline: Option<Instant>,
    call: F,
) -> Result<Vec<Call>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<Option<Call>>>,
{
    let next = AtomicUsize::new(0);
    let worker = async || {
        let mut calls = Vec::new();
        while deadline.is_none_or(|d| Instant::now() < d) {
            let Some(done) = call(next.fetch_add(1, Ordering::SeqCst)).await? else {
                break;
            };
            calls.push(done);
        }
        Ok::<_, anyhow::Error>(calls)
    };
    let workers = futures_util::future::join_all((0..concurrency).map(|_| worker())).await;
    Ok(workers.into_iter().collect::<Result<Vec<_>>>()?.concat())
}

/// `page(cursor)` from no cursor on, each time with the cursor the last page gave, until a page
/// gives none (at most `max_calls` pages).
pub async fn pages<C, F, Fut>(max_calls: usize, mut page: F) -> Result<Vec<Call>>
where
    F: FnMut(Option<C>) -> Fut,
    Fut: Future<Output = Result<(Call, Option<C>)>>,
{
    let (mut calls, mut cursor) = (Vec::new(), None);
    loop {
        let (call, next) = page(cursor).await?;
        calls.push(call);
        match next {
            None => return Ok(calls),
            Some(_) if calls.len() >= max_calls => bail!("a next page after {max_calls} pages"),
            next => cursor = next,
        }
    }
}

/// The figures of `work`'s calls, with the service's CPU time and what the QStash sink was
/// sent while it ran.
pub async fn measured<W>(jobs: &Jobs, sink: &Sink, work: W) -> Result<Figures>
where
    W: Future<Output = Result<Vec<Call>>>,
{
    let (cpu_before, sink_before, started) = (jobs.cpu_ms()?, sink.counts(), Instant::now());
    let calls = work.await?;
    let mut figures = Figures::of(&calls, started.elapsed().as_secs_f64());
    figures.cpu_ms = jobs.cpu_ms()? - cpu_before;
    figures.qstash = Some(sink.counts() - sink_before);
    Ok(figures)
}

/// `n` service calls and `n` floor calls after [`WARM_UP`] unmeasured pairs, alternating (and
/// alternating which goes first) so that both see the same database and the same machine
/// noise; both must find the same. The service's CPU is measured over its measured calls.
pub async fn alternate<S, SFut, F, FFut>(
    jobs: &Jobs,
    n: usize,
    service: S,
    floor: F,
) -> Result<(Figures, Figures)>
where
    S: Fn(usize) -> SFut,
    SFut: Future<Output = Result<Call>>,
    F: Fn(usize) -> FFut,
    FFut: Future<Output = Result<Call>>,
{
    let (mut services, mut floors, mut cpu_before) = (Vec::new(), Vec::new(), 0.0);
    for i in 0..WARM_UP + n {
        if i == WARM_UP {
            cpu_before = jobs.cpu_ms()?;
        }
        let (s, f) = if i % 2 == 0 {
            let s = service(i).await?;
            (s, floor(i).await?)
        } else {
            let f = floor(i).await?;
            (service(i).await?, f)
        };
        ensure!(
            s.found == f.found,
            "service found {:?}, floor {:?}",
            s.found,
            f.found
        );
        if i >= WARM_UP {
            services.push(s);
            floors.push(f);
        }
    }
    let mut service = Figures::of(&services, f64::NAN);
    service.cpu_ms = jobs.cpu_ms()? - cpu_before;
    Ok((service, Figures::of(&floors, f64::NAN)))
}

/// A column: its header and its cell from a row's service and floor figures.
pub type Col = (&'static str, fn(&Figures, &Figures) -> String);

/// The columns of the tables that compare a service (`S_`) with its floor (`F_`).
pub mod col {
    use super::Col;

    pub const N: Col = ("n", |s, _| s.n.to_string());
    pub const S_P50: Col = ("service p50", |s, _| format!("{:.2} ms", s.p50_ms));
    pub const S_P99: Col = ("service p99", |s, _| format!("{:.2} ms", s.p99_ms));
    pub const S_RATE: Col = ("service req/s", |s, _| format!("{:.0}", s.per_second));
    pub const F_P50: Col = ("floor p50", |_, f| format!("{:.2} ms", f.p50_ms));
    pub const F_P99: Col = ("floor p99", |_, f| format!("{:.2} ms", f.p99_ms));
    pub const F_RATE: Col = ("floor ops/s", |_, f| format!("{:.0}", f.per_second));
    pub const RATIO_P50: Col = ("p50 ratio", |s, f| format!("{:.2}", s.p50_ms / f.p50_ms));
    pub const RATIO_P99: Col = ("p99 ratio", |s, f| format!("{:.2}", s.p99_ms / f.p99_ms));
    pub const OVERHEAD: Col = ("p50 overhead", |s, f| {
        format!("{:+.2} ms", s.p50_ms - f.p50_ms)
    });
    pub const CPU: Col = ("service CPU per request", |s, _| {
        format!("{:.0} µs", s.cpu_us())
    });
    pub const COMMANDS: Col = ("MongoDB commands", |s, _| s.commands.join(", "));
    pub const FAILED: Col = ("failed (service / floor)", |s, f| {
        format!("{} / {}", s.errors, f.errors)
    });
}

/// A Markdown table whose rows each compare a service with its floor: the leading cells say
/// what was measured, the columns what is compared.
pub struct Table {
    headers: Vec<String>,
    columns: Vec<Col>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// `floor` names the floor in the headers (`floor p50`, `aggregation p50`).
    pub fn new(lead: &[&str], floor: &str, columns: &[Col]) -> Self {
        let named = columns
            .iter()
            .map(|(h, _)| h.replacen("floor ", &format!("{floor} "), 1));
        let headers = lead.iter().map(|h| h.to_string()).chain(named).collect();
        let (columns, rows) = (columns.to_vec(), Vec::new());
        Table {
            headers,
            columns,
            rows,
        }
    }

    pub fn row(&mut self, lead: &[&str], service: &Figures, floor: &Figures) {
        let (s, f) = (service, floor);
        eprintln!(
            "{}: p50 {:.2} / {:.2} ms",
            lead.join(" "),
            s.p50_ms,
            f.p50_ms
        );
        let cells = self.columns.iter().map(|(_, cell)| cell(service, floor));
        self.rows
            .push(lead.iter().map(|c| c.to_string()).chain(cells).collect());
    }

    /// A row of its own cells.
    pub fn cells(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        // An empty cell is printed `| |`.
        let cell = |c: &String| {
            if c.is_empty() {
                " |".into()
            } else {
                format!(" {c} |")
            }
        };
        let line = |cells: &[String]| cells.iter().map(cell).collect::<String>();
        println!("|{}", line(&self.headers));
        println!("|{}", " --- |".repeat(self.headers.len()));
        for row in &self.rows {
            println!("|{}", line(row));
        }
    }
}

/// `100000` as `100,000`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_and_numbers_read_well() {
        let call = |ms, ok, commands| Call {
            ms,
            ok,
            commands,
            ..Call::default()
        };
        let calls = [
            call(3.0, true, Some(1)),
            call(1.0, false, None),
            call(2.0, true, Some(1)),
        ];
        let figures = Figures::of(&calls, 2.0);
        assert_eq!(
            (figures.p50_ms, figures.p99_ms, figures.per_second),
            (2.0, 3.0, 1.5)
        );
        assert_eq!((figures.errors, figures.commands_total), (1, 2));
        assert_eq!(figures.commands, ["?", "1"]);
        assert_eq!([thousands(100_000), thousands(20)], ["100,000", "20"]);
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[tokio::test]
    async fn pages_follow_the_cursor_and_workers_share_the_calls() {
        let page = async |cursor: Option<u32>| {
            let at = cursor.unwrap_or(0);
            Ok((Call::default(), (at < 2).then_some(at + 1)))
        };
        assert_eq!(pages(5, page).await.unwrap().len(), 3);
        assert!(pages(2, page).await.is_err());
        let call = async |i: usize| Ok((i < 10).then(Call::default));
        assert_eq!(drive(3, None, call).await.unwrap().len(), 10);
    }
}
