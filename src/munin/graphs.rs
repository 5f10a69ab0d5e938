//! Munin graphs rendered from a [`Snapshot`]: `config` and `fetch` text for each graph.
//!
//! The graphs and their fields are static, so a plugin can print `U` for every field
//! without reaching the daemon. Values and thresholds that depend on kernel limits come
//! from the snapshot. Field names follow munin's rules (`[A-Za-z_][A-Za-z0-9_]*`) and stay
//! short and stable: they are the names of the RRD files on the munin master.

use std::fmt::Write;

use crate::derived;
use crate::snapshot::Snapshot;

/// How a field is stored and drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    /// A counter; munin stores its per-second rate.
    Derive,
}

type ValueFn = fn(&Snapshot) -> Option<f64>;

pub struct Field {
    pub name: &'static str,
    pub label: &'static str,
    pub info: &'static str,
    pub draw: &'static str,
    pub kind: Kind,
    pub value: ValueFn,
    /// Thresholds, computed from the snapshot (e.g. 80 % of nf_conntrack_max).
    pub warning: Option<ValueFn>,
    pub critical: Option<ValueFn>,
}

pub struct Graph {
    pub name: &'static str,
    pub title: &'static str,
    pub vlabel: &'static str,
    pub args: &'static str,
    pub info: &'static str,
    pub fields: &'static [Field],
    /// Only offered when the conntrack breakdown is enabled.
    pub needs_breakdown: bool,
}

/// The conntrack table's thresholds, 80 % and 90 % of nf_conntrack_max: the table graph's
/// and fw_conntrack's total.
pub(super) fn ct_limit(s: &Snapshot) -> Option<f64> {
    s.conntrack.as_ref()?.limit.map(|v| v as f64)
}

pub(super) fn ct_warn(s: &Snapshot) -> Option<f64> {
    warn_of(ct_limit(s))
}

pub(super) fn ct_crit(s: &Snapshot) -> Option<f64> {
    crit_of(ct_limit(s))
}

/// Munin's `clean_fieldname`: anything outside `[A-Za-z0-9_]` becomes `_`, and a
/// leading digit gets a `_` in front.
pub fn clean_fieldname(name: &str) -> String {
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

macro_rules! field {
    ($name:expr, $label:expr, $info:expr, $draw:expr, $kind:expr, $value:expr) => {
        $crate::munin::graphs::Field {
            name: $name,
            label: $label,
            info: $info,
            draw: $draw,
            kind: $kind,
            value: $value,
            warning: None,
            critical: None,
        }
    };
}
pub(super) use field;

/// A derived ratio as the percentage Munin graphs draw (uncapped, see [`derived`]).
pub(super) fn pct(ratio: Option<f64>) -> Option<f64> {
    ratio.map(|r| r * 100.0)
}
/// A field's warning and critical lines at the shared levels of a limit.
pub(super) fn warn_of(limit: Option<f64>) -> Option<f64> {
    limit.map(|l| l * derived::WARN)
}
pub(super) fn crit_of(limit: Option<f64>) -> Option<f64> {
    limit.map(|l| l * derived::CRIT)
}
pub(super) fn pct_warn(_: &Snapshot) -> Option<f64> {
    warn_of(Some(100.0))
}
pub(super) fn pct_crit(_: &Snapshot) -> Option<f64> {
    crit_of(Some(100.0))
}
/// Any drop at all warns.
pub(super) fn any(_: &Snapshot) -> Option<f64> {
    Some(0.0)
}

/// Shortest decimal form: `28232`, `209715.2`.
fn number(v: f64) -> String {
    format!("{v}")
}

/// `config` output of one graph (without the final `.` line).
pub fn config(g: &Graph, snap: Option<&Snapshot>, out: &mut String) {
    let _ = writeln!(out, "graph_title {}", g.title);
    let _ = writeln!(out, "graph_args {}", g.args);
    let _ = writeln!(out, "graph_vlabel {}", g.vlabel);
    let _ = writeln!(out, "graph_category network");
    let _ = writeln!(out, "graph_info {}", g.info);
    let order: Vec<String> = g.fields.iter().map(|f| clean_fieldname(f.name)).collect();
    let _ = writeln!(out, "graph_order {}", order.join(" "));
    for (f, name) in g.fields.iter().zip(&order) {
        let _ = writeln!(out, "{name}.label {}", f.label);
        let _ = writeln!(out, "{name}.info {}", f.info);
        if f.draw == "no" {
            let _ = writeln!(out, "{name}.graph no");
        } else {
            let _ = writeln!(out, "{name}.draw {}", f.draw);
        }
        match f.kind {
            Kind::Gauge => {
                let _ = writeln!(out, "{name}.type GAUGE");
            }
            Kind::Derive => {
                let _ = writeln!(out, "{name}.type DERIVE\n{name}.min 0");
            }
        }
        for (key, threshold) in [("warning", f.warning), ("critical", f.critical)] {
            if let Some(v) = threshold.zip(snap).and_then(|(t, s)| t(s)) {
                let _ = writeln!(out, "{name}.{key} {}", number(v));
            }
        }
    }
}

/// `fetch` output of one graph: `field.value N`, or `U` when unknown (no snapshot yet,
/// or the source is down).
pub fn fetch(g: &Graph, snap: Option<&Snapshot>, out: &mut String) {
    for f in g.fields {
        let name = clean_fieldname(f.name);
        match snap.and_then(f.value) {
            Some(v) => {
                let _ = writeln!(out, "{name}.value {}", number(v));
            }
            None => {
                let _ = writeln!(out, "{name}.value U");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fieldnames_follow_munin_rules() {
        assert_eq!(clean_fieldname("time_wait"), "time_wait");
        assert_eq!(clean_fieldname("10.0.0.1:80"), "_10_0_0_1_80");
        assert_eq!(clean_fieldname("a-b c"), "a_b_c");
        assert_eq!(clean_fieldname(""), "_");
    }

    #[test]
    fn numbers() {
        assert_eq!(number(28232.0), "28232");
        assert_eq!(number(96.0), "96");
        assert_eq!(number(97.25), "97.25");
        assert_eq!(number(262144.0 * 0.8), "209715.2");
    }
}
