//! The report: per-interval rows, the printed table, the CSV and the SVG plot.

#[allow(unused_imports)]
use super::*;

pub(crate) fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted_us[i.min(sorted_us.len() - 1)]) / 1000.0
}

/// One printed / plotted row.
pub(crate) struct Row {
    pub(crate) t_end_min: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) b: Bucket,
}

pub(crate) fn row_of(i: usize, interval: Duration, b: &Bucket) -> Row {
    let mut lat = b.search_us.clone();
    lat.sort_unstable();
    Row {
        t_end_min: (i + 1) as f64 * interval.as_secs_f64() / 60.0,
        p50: percentile_ms(&lat, 0.5),
        p99: percentile_ms(&lat, 0.99),
        b: b.clone(),
    }
}

pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub(crate) fn print_header() {
    println!(
        "{:>6} {:>8} {:>8} {:>8} {:>13} {:>7} {:>11} {:>7} {:>5} {:>5} {:>8} {:>8} {:>8}  background",
        "t min",
        "p50 ms",
        "p99 ms",
        "search",
        "upsert(pts)",
        "delete",
        "bulk(rows)",
        "compact",
        "5xx",
        "err",
        "RSS MiB",
        "anon",
        "peak"
    );
}

pub(crate) fn print_row(r: &Row) {
    let b = &r.b;
    let mut bg = Vec::new();
    if b.bulk_busy {
        bg.push("bulk-load");
    }
    if b.compact_busy {
        bg.push("compaction");
    }
    println!(
        "{:>6.2} {:>8.2} {:>8.2} {:>8} {:>13} {:>7} {:>11} {:>7} {:>5} {:>5} {:>8.0} {:>8.0} {:>8.0}  {}",
        r.t_end_min,
        r.p50,
        r.p99,
        b.done[Kind::Search as usize],
        format!("{}({})", b.done[Kind::Upsert as usize], b.upsert_points),
        b.done[Kind::Delete as usize],
        format!("{}({})", b.done[Kind::Bulk as usize], b.bulk_rows),
        b.done[Kind::Compact as usize],
        b.e5xx,
        b.other_errors,
        mib(b.rss_kib),
        mib(b.rss_anon_kib),
        mib(b.rss_peak_kib),
        bg.join("+")
    );
    let _ = std::io::stdout().flush();
}

pub(crate) fn write_csv(path: &Path, rows: &[Row]) -> Result<()> {
    let mut s = String::from(
        "interval,t_end_min,p50_ms,p99_ms,searches,upserts,upsert_points,deletes,bulk_loads,bulk_rows,compactions,http_5xx,other_errors,rss_mib,rss_anon_mib,rss_peak_mib,bulk_running,compaction_running\n",
    );
    for (i, r) in rows.iter().enumerate() {
        let b = &r.b;
        let _ = writeln!(
            s,
            "{},{:.3},{:.3},{:.3},{},{},{},{},{},{},{},{},{},{:.1},{:.1},{:.1},{},{}",
            i + 1,
            r.t_end_min,
            r.p50,
            r.p99,
            b.done[0],
            b.done[1],
            b.upsert_points,
            b.done[2],
            b.done[3],
            b.bulk_rows,
            b.done[4],
            b.e5xx,
            b.other_errors,
            mib(b.rss_kib),
            mib(b.rss_anon_kib),
            mib(b.rss_peak_kib),
            u8::from(b.bulk_busy),
            u8::from(b.compact_busy)
        );
    }
    std::fs::write(path, s)?;
    Ok(())
}

pub(crate) fn plot(path: &Path, rows: &[Row], title: &str) -> Result<()> {
    use plotters::prelude::*;

    let root = SVGBackend::new(path, (960, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 18))?;
    let (top, bottom) = root.split_vertically(340);
    let x_max = rows.last().map_or(1.0, |r| r.t_end_min).max(1e-3);
    let finite = |x: f64| x.is_finite().then_some(x);

    let lat_max = rows
        .iter()
        .filter_map(|r| finite(r.p99))
        .fold(0.0f64, f64::max)
        .max(0.1)
        * 1.15;
    let mut chart = ChartBuilder::on(&top)
        .caption("search latency per interval", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..lat_max)?;
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc("ms")
        .draw()?;
    for (name, color, pick) in [
        ("p50", BLUE, (|r: &Row| r.p50) as fn(&Row) -> f64),
        ("p99", RED, |r: &Row| r.p99),
    ] {
        chart
            .draw_series(
                LineSeries::new(
                    rows.iter()
                        .filter_map(|r| finite(pick(r)).map(|y| (r.t_end_min, y))),
                    color.stroke_width(2),
                )
                .point_size(3),
            )?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let rss_max = rows
        .iter()
        .map(|r| mib(r.b.rss_peak_kib.max(r.b.rss_kib)))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.15;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("server RSS per interval", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..rss_max)?;
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc("MiB")
        .draw()?;
    let green = RGBColor(0, 140, 60);
    let grey = RGBColor(120, 120, 120);
    for (name, color, pick) in [
        (
            "VmRSS (end)",
            green,
            (|r: &Row| mib(r.b.rss_kib)) as fn(&Row) -> f64,
        ),
        ("RssAnon (end)", BLUE, |r: &Row| mib(r.b.rss_anon_kib)),
        ("VmRSS (peak)", grey, |r: &Row| mib(r.b.rss_peak_kib)),
    ] {
        chart
            .draw_series(
                LineSeries::new(
                    rows.iter().map(|r| (r.t_end_min, pick(r))),
                    color.stroke_width(2),
                )
                .point_size(3),
            )?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
