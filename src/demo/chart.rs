//! The live terminal chart (ratatui): demand against the forecast band, and the
//! replicas each rule asks for, over the run's hours of the day, with the key numbers
//! above. Drawn on the terminal's alternate screen, left when the run ends (also on
//! drop), so the summary prints on the normal screen below the command.

use super::load::Snapshot;
use super::record::Sample;
use super::view::{Header, Observed};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::crossterm::ExecutableCommand;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::Line;
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, Paragraph};
use ratatui::Terminal;
use std::io::Stdout;

const DAY_MS: u64 = 86_400_000;

/// A terminal showing the chart until dropped.
pub struct Live {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    /// The run's span, hours of the day (may pass 24).
    hours: (f64, f64),
}

/// Hours of the day of `at`, unwrapped past midnight relative to `from`.
fn hour(at: u64, from: f64) -> f64 {
    let h = (at % DAY_MS) as f64 / 3_600_000.0;
    if h + 1e-9 < from.rem_euclid(24.0) - 12.0 {
        h + 24.0
    } else {
        h
    }
}

fn clock(h: f64) -> String {
    let m = (h.rem_euclid(24.0) * 60.0).round() as u32 % 1440;
    format!("{:02}:{:02}", m / 60, m % 60)
}

impl Live {
    /// Enters the alternate screen; `hours` is the run's span (hours of the day).
    pub fn start(hours: (f64, f64)) -> std::io::Result<Self> {
        let mut out = std::io::stdout();
        out.execute(EnterAlternateScreen)?;
        let mut terminal = Terminal::new(CrosstermBackend::new(out))?;
        terminal.clear()?;
        Ok(Self { terminal, hours })
    }

    /// Draws one frame.
    pub fn draw(
        &mut self,
        h: &Header,
        day_clock: &str,
        load: &Snapshot,
        obs: &Observed,
        samples: &[Sample],
    ) -> std::io::Result<()> {
        let (x0, x1) = self.hours;
        let at = |s: &Sample| hour(s.at, x0);
        let demand: Vec<(f64, f64)> = samples.iter().map(|s| (at(s), s.demand)).collect();
        let offered: Vec<(f64, f64)> = samples.iter().map(|s| (at(s), s.offered)).collect();
        let band = |f: fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
            samples
                .iter()
                .filter_map(|s| Some((hour(s.forecast_at?, x0), f(s)?)))
                .collect()
        };
        let (point, upper, lower) = (
            band(|s| s.forecast_point),
            band(|s| s.forecast_upper),
            band(|s| s.forecast_lower),
        );
        let ymax = demand
            .iter()
            .chain(&upper)
            .chain(&offered)
            .map(|p| p.1)
            .fold(0.5, f64::max)
            * 1.1;
        let rule = |f: fn(&Sample) -> u32| -> Vec<(f64, f64)> {
            samples.iter().map(|s| (at(s), f64::from(f(s)))).collect()
        };
        let (predictive, reactive, desired) = (
            rule(|s| s.predictive),
            rule(|s| s.reactive),
            rule(|s| s.desired),
        );
        let rmax = desired
            .iter()
            .chain(&predictive)
            .chain(&reactive)
            .map(|p| p.1)
            .fold(2.0, f64::max)
            + 1.0;
        let x_labels = || -> Vec<Line<'static>> {
            [x0, (x0 + x1) / 2.0, x1]
                .into_iter()
                .map(|x| Line::from(clock(x)))
                .collect()
        };
        let text = header_lines(h, day_clock, load, obs);
        self.terminal.draw(|f| {
            let [top, mid, bottom] = Layout::vertical([
                Constraint::Length(text.len() as u16 + 2),
                Constraint::Percentage(55),
                Constraint::Percentage(45),
            ])
            .areas(f.area());
            f.render_widget(
                Paragraph::new(text.clone()).block(Block::bordered().title(format!(
                    " prescale demo: time scale {} (one wall second = {} s of the day) ",
                    h.time_scale, h.time_scale
                ))),
                top,
            );
            let demand_chart = Chart::new(vec![
                line("forecast upper", Color::Blue, &upper),
                line("forecast lower", Color::Blue, &lower),
                line("forecast point", Color::Cyan, &point),
                line("offered", Color::DarkGray, &offered),
                line("demand", Color::White, &demand),
            ])
            .block(Block::bordered().title(format!(
                " demand (busy workers): white measured, grey offered; forecast drawn {} min ahead: cyan point, blue band ",
                h.startup.as_secs() / 60
            )))
            .x_axis(Axis::default().bounds([x0, x1]).labels(x_labels()))
            .y_axis(
                Axis::default()
                    .bounds([0.0, ymax])
                    .labels(vec![Line::from("0"), Line::from(format!("{ymax:.1}"))]),
            );
            f.render_widget(demand_chart, mid);
            let replicas_chart = Chart::new(vec![
                line("reactive", Color::Red, &reactive),
                line("predictive", Color::Blue, &predictive),
                line("desired", Color::White, &desired),
            ])
            .block(Block::bordered().title(
                " desired replicas: blue predictive rule, red reactive rule, white decision ",
            ))
            .x_axis(Axis::default().bounds([x0, x1]).labels(x_labels()))
            .y_axis(
                Axis::default()
                    .bounds([0.0, rmax])
                    .labels(vec![Line::from("0"), Line::from(format!("{rmax:.0}"))]),
            );
            f.render_widget(replicas_chart, bottom);
        })?;
        Ok(())
    }
}

/// One line of a chart; it borrows its points for the frame.
fn line<'a>(name: &'static str, color: Color, data: &'a [(f64, f64)]) -> Dataset<'a> {
    Dataset::default()
        .name(name)
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(Style::default().fg(color))
        .data(data)
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.terminal.show_cursor();
        let _ = std::io::stdout().execute(LeaveAlternateScreen);
    }
}

fn header_lines(
    h: &Header,
    day_clock: &str,
    load: &Snapshot,
    obs: &Observed,
) -> Vec<Line<'static>> {
    let mut lines = vec![Line::from(format!(
        "day clock {day_clock}   offered {:.0} req/s (peak {:.0})   sent {}  ok {}  failed {}  batch shed {}   admin http://{}",
        load.offered_rate, h.peak_rate, load.sent, load.ok, load.failed, load.shed, h.admin
    ))];
    lines.push(Line::from(match &obs.forecast {
        Some(fc) => format!(
            "forecast at +{} min: {:.2} [{:.2}, {:.2}] busy workers ({}){}",
            h.startup.as_secs() / 60,
            fc.lead_point,
            fc.lead_lower,
            fc.lead_upper,
            fc.model,
            if h.seeded.is_some() {
                "; warm-started from earlier days"
            } else {
                ""
            }
        ),
        None => "forecast: waiting".to_string(),
    }));
    lines.push(Line::from(match &obs.scale {
        Some(sc) => format!(
            "replicas: desired {} (predictive {}, reactive {}; {}); demand now {:.2}; start-up {} min",
            sc.desired,
            sc.predictive,
            sc.reactive,
            sc.reason,
            sc.current_demand,
            h.startup.as_secs() / 60
        ),
        None => "replicas: waiting for the first decision".to_string(),
    }));
    lines.push(Line::from(format!(
        "pre-shed level {:.2}   anomalies {}   signatures {}   Ctrl-C ends early",
        obs.preshed_level.unwrap_or(0.0),
        obs.anomalies.unwrap_or(0),
        obs.signatures.as_ref().map_or(0, |s| s.list.len()),
    )));
    lines
}
