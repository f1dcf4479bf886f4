//! `supervisorctl top`: every plugin and instance with its CPU, memory, tasks,
//! calls per second, error rate, p99 and state, redrawn every `--delay` on a
//! terminal as systemd-cgtop does; one sample (taken over one delay) with
//! `--once`, `--json`, or when stdout is not a terminal.

mod calls;
mod render;
mod screen;
mod view;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use plugin_proto::control::v1::{MetricsRequest, StatusRequest};

use crate::client::{Client, Wait};
use crate::exit::Failure;
use crate::stdout::outln;
use view::{History, Sample, View};

/// The shortest `--delay`: each refresh is two control calls and a metrics rendering.
const MIN_DELAY: Duration = Duration::from_millis(100);

/// `--delay SECONDS`, as top takes it: 2, 0.5.
pub fn parse_delay(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number of seconds (e.g. 1 or 0.5)"))?;
    if !secs.is_finite() || secs < MIN_DELAY.as_secs_f64() {
        return Err(format!("must be at least {} seconds", MIN_DELAY.as_secs_f64()));
    }
    // Each refresh is timed from now: a delay past any clock's range would overflow it.
    let most = plugin_supervisor::config::units::MAX_DURATION;
    if secs > most.as_secs_f64() {
        return Err(format!("must be at most {} seconds (365 days)", most.as_secs()));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// What `top` was asked.
pub struct Options {
    /// Only this plugin, when set.
    pub name: String,
    pub delay: Duration,
    pub once: bool,
    pub json: bool,
}

pub async fn run(c: &mut Client, w: &Wait, o: Options) -> Result<ExitCode, Failure> {
    let mut history = History::default();
    // An unknown plugin or a daemon out of reach ends it here, before the screen is taken.
    history.push(look(c, w, &o.name).await?);
    if o.once || o.json || !std::io::stdout().is_terminal() {
        tokio::time::sleep(o.delay).await;
        let view = history.push(look(c, w, &o.name).await?).ok_or("no second sample")?;
        print_once(&view, o.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    live(c, w, &o, history).await
}

fn print_once(view: &View, json: bool) -> Result<(), Failure> {
    if json {
        outln!("{}", serde_json::to_string_pretty(&render::json(view)).map_err(|e| e.to_string())?);
    } else {
        for line in render::lines(view, crate::colour::wanted()) {
            outln!("{line}");
        }
    }
    Ok(())
}

/// One look at the daemon: every instance's status, then the call counters.
async fn look(c: &mut Client, w: &Wait, name: &str) -> Result<Sample, Failure> {
    let instances = w.answer(c.status(w.request(StatusRequest { name: name.to_owned() }))).await?.instances;
    let text = w.answer(c.metrics(w.request(MetricsRequest {}))).await?.text;
    let taken = Instant::now();
    let unix_nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut calls = calls::parse(&text);
    if !name.is_empty() {
        calls.retain(|plugin, _| plugin == name);
    }
    Ok(Sample { taken, unix_nanos, instances, calls })
}

/// The live screen until `q`, Ctrl-C or a stop signal.
async fn live(c: &mut Client, w: &Wait, o: &Options, mut history: History) -> Result<ExitCode, Failure> {
    // Stop signals end it as `q` does, giving the terminal back (in raw mode Ctrl-C is a key).
    let mut signals = plugin_proto::signals::Signals::new(&[libc::SIGTERM, libc::SIGHUP, libc::SIGINT])
        .map_err(|e| format!("cannot catch stop signals: {e}"))?;
    let mut screen = screen::Screen::open().map_err(|e| format!("cannot take over the terminal: {e}"))?;
    let mut input = screen::input();
    let waiting = format!("supervisorctl top: first sample in {}s (q quits)", o.delay.as_secs_f64());
    let mut shown = vec![waiting];
    screen.draw(&shown).map_err(|e| format!("cannot draw: {e}"))?;
    let mut next = tokio::time::Instant::now() + o.delay;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {
                next += o.delay;
                // A daemon that went away ends it: the terminal is given back first (drop),
                // then the reason is printed.
                let now = look(c, w, &o.name).await?;
                if let Some(view) = history.push(now) {
                    shown = render::lines(&view, crate::colour::wanted());
                    shown.push(String::new());
                    shown.push(format!("every {}s; q quits", o.delay.as_secs_f64()));
                }
                // A look that took longer than the delay is not made up for.
                next = next.max(tokio::time::Instant::now());
            }
            asked = input.recv() => match asked {
                Some(screen::Input::Redraw) => {}
                Some(screen::Input::Quit) | None => break,
            },
            _ = signals.recv() => break,
        }
        screen.draw(&shown).map_err(|e| format!("cannot draw: {e}"))?;
    }
    drop(screen);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_is_seconds_as_top_takes_it() {
        assert_eq!(parse_delay("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_delay("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_delay("0.01"), Err("must be at least 0.1 seconds".into()));
        assert_eq!(parse_delay("-1"), Err("must be at least 0.1 seconds".into()));
        assert_eq!(parse_delay("1s"), Err("\"1s\" is not a number of seconds (e.g. 1 or 0.5)".into()));
        assert!(parse_delay("inf").is_err_and(|e| e.starts_with("must be")));
        // Timed from now, it would have overflowed the clock (a panic).
        assert_eq!(parse_delay("1e19"), Err("must be at most 31536000 seconds (365 days)".into()));
        assert_eq!(parse_delay("31536000"), Ok(Duration::from_secs(31_536_000)));
    }
}
