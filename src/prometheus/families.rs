//! Builds metric families in output order for the text encoder: one family per name, none
//! when a family has no series (the text format has no empty families).

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// A count as a sample value.
pub fn f(v: u64) -> f64 {
    v as f64
}

/// A count that may be absent (an older kernel's missing field) as a sample value.
pub fn opt(v: Option<u64>) -> Option<f64> {
    v.map(f)
}

/// Collects metric families in output order.
#[derive(Default)]
pub struct Families(pub Vec<MetricFamily>);

impl Families {
    pub fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut MetricFamily {
        let mut f = MetricFamily::default();
        f.set_name(name.to_owned());
        f.set_help(help.to_owned());
        f.set_field_type(kind);
        self.0.push(f);
        self.0.last_mut().expect("just pushed")
    }

    /// One family with one series per `(labels, value)`; none at all when there are no
    /// series (the text format has no empty families).
    pub fn labelled<'a>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        series: impl IntoIterator<Item = (Vec<(&'a str, String)>, f64)>,
    ) {
        let metrics: Vec<Metric> = series.into_iter().map(|(labels, value)| sample(kind, &labels, value)).collect();
        if !metrics.is_empty() {
            self.family(name, help, kind).set_metric(metrics);
        }
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: impl Into<Option<f64>>) {
        if let Some(v) = value.into() {
            self.labelled(name, help, MetricType::GAUGE, [(vec![], v)]);
        }
    }

    pub fn counter(&mut self, name: &str, help: &str, value: impl Into<Option<f64>>) {
        if let Some(v) = value.into() {
            self.labelled(name, help, MetricType::COUNTER, [(vec![], v)]);
        }
    }
}

fn sample(kind: MetricType, labels: &[(&str, String)], value: f64) -> Metric {
    let mut m = Metric::default();
    m.set_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut lp = LabelPair::default();
                lp.set_name((*k).to_owned());
                lp.set_value(v.clone());
                lp
            })
            .collect(),
    );
    if kind == MetricType::COUNTER {
        let mut c = Counter::default();
        c.set_value(value);
        m.set_counter(c);
    } else {
        let mut g = Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
    }
    m
}
