//! docs/benchmarks.svg: requests per second against the number of allowed peers (log x),
//! one line per system and family (IPv6 dashed). Plain SVG text: nothing to build.
use std::fmt::Write as _;

use crate::{peers::Family, Results, System};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

fn colour(system: System) -> &'static str {
    match system {
        System::None => "#555555",
        System::Netwarden => "#1f77b4",
        System::Iptables => "#d62728",
    }
}

pub fn svg(results: &Results) -> String {
    let sizes: Vec<u32> = {
        let mut sizes: Vec<u32> = results.keys().map(|(_, size, _)| *size).collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    };
    let peak = results.values().map(|f| f.requests).fold(0.0, f64::max);
    let y_max = nice_ceiling(peak * 1.1);
    let (lo, hi) = (
        f64::from(*sizes.first().unwrap_or(&1)).log10(),
        f64::from(*sizes.last().unwrap_or(&10)).log10(),
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |size: u32| LEFT + (f64::from(size).log10() - lo) / (hi - lo).max(1e-9) * plot_w;
    let y = |value: f64| TOP + plot_h - value / y_max * plot_h;

    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">TCP requests per \
         second against allowed peer addresses</text>\n",
        LEFT + plot_w / 2.0
    );
    // Axes, grid and ticks.
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\" stroke=\"black\"/>",
        b = TOP + plot_h,
        r = LEFT + plot_w
    );
    let bottom = TOP + plot_h;
    for &size in &sizes {
        tick(&mut out, (x(size), TOP), (x(size), bottom), "#dddddd");
        label(
            &mut out,
            (x(size), bottom + 18.0),
            "middle",
            &size.to_string(),
        );
    }
    for step in 0..=5 {
        let value = y_max * f64::from(step) / 5.0;
        tick(
            &mut out,
            (LEFT, y(value)),
            (LEFT + plot_w, y(value)),
            "#eeeeee",
        );
        label(
            &mut out,
            (LEFT - 6.0, y(value) + 4.0),
            "end",
            &format!("{value:.0}"),
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">allowed peer addresses (log scale)</text>\n\
         <text x=\"18\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {})\">requests/s</text>",
        LEFT + plot_w / 2.0,
        HEIGHT - 16.0,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    // One line per system and family, and its legend entry.
    let mut legend_y = TOP + 10.0;
    for family in [Family::V4, Family::V6] {
        for system in System::ALL {
            let points: Vec<(f64, f64)> = sizes
                .iter()
                .filter_map(|&size| {
                    results
                        .get(&(family, size, system))
                        .map(|f| (x(size), y(f.requests)))
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            let dash = if family == Family::V6 {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            };
            let path: Vec<String> = points
                .iter()
                .map(|(px, py)| format!("{px:.1},{py:.1}"))
                .collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
                path.join(" "),
                c = colour(system)
            );
            for (px, py) in &points {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\" fill=\"{}\"/>",
                    colour(system)
                );
            }
            let lx = LEFT + plot_w + 16.0;
            let _ = writeln!(
                out,
                "<line x1=\"{lx}\" y1=\"{legend_y}\" x2=\"{}\" y2=\"{legend_y}\" stroke=\"{c}\" \
                 stroke-width=\"2\"{dash}/>\n<text x=\"{}\" y=\"{}\">{} {}</text>",
                lx + 24.0,
                lx + 30.0,
                legend_y + 4.0,
                system.name(),
                family.name(),
                c = colour(system)
            );
            legend_y += 20.0;
        }
    }
    out.push_str("</svg>\n");
    out
}

/// A grid line.
fn tick(out: &mut String, (x1, y1): (f64, f64), (x2, y2): (f64, f64), stroke: &str) {
    let _ = writeln!(
        out,
        "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"{stroke}\"/>"
    );
}

fn label(out: &mut String, (x, y): (f64, f64), anchor: &str, text: &str) {
    let _ = writeln!(
        out,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\">{text}</text>"
    );
}

/// The next round figure at or above `value` (1, 2 or 5 times a power of ten).
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|v| *v >= value)
        .unwrap_or(10.0 * power)
}
