//! `--log.format logfmt`: one `key=value` line per event, as node_exporter and most log
//! shippers read them: `ts=… level=info target=sockwatch::sampler msg="…" key=value`.
//! A value is quoted when it holds a space, `=`, `"` or nothing; `"`, `\` and control
//! characters inside quotes are escaped, so a line never breaks.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The formatter `tracing_subscriber::fmt` uses for `--log.format logfmt`.
pub struct Logfmt;

/// Writes `value` as a logfmt value.
pub fn value(out: &mut impl Write, value: &str) -> fmt::Result {
    let plain = !value.is_empty() && !value.chars().any(|c| c == ' ' || c == '=' || c == '"' || c.is_control());
    if plain {
        return out.write_str(value);
    }
    out.write_char('"')?;
    for c in value.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\t' => out.write_str("\\t")?,
            c if c.is_control() => write!(out, "\\u{{{:x}}}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

/// Collects an event's fields as ` key=value`, the message first as `msg`.
#[derive(Default)]
struct Fields {
    msg: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, v: &str) {
        self.put(field.name(), v);
    }

    fn record_debug(&mut self, field: &Field, v: &dyn fmt::Debug) {
        self.put(field.name(), &format!("{v:?}"));
    }
}

impl Fields {
    fn put(&mut self, name: &str, v: &str) {
        if name == "message" {
            self.msg = v.to_owned();
        } else {
            let _ = write!(self.rest, " {}=", name.replace(['.', ' ', '='], "_"));
            let _ = value(&mut self.rest, v);
        }
    }
}

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        write!(w, "ts={ts} level={} target={} msg=", meta.level().as_str().to_ascii_lowercase(), meta.target())?;
        let mut msg = String::new();
        value(&mut msg, &fields.msg)?;
        writeln!(w, "{msg}{}", fields.rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_only_when_needed() {
        let v = |s: &str| {
            let mut out = String::new();
            value(&mut out, s).unwrap();
            out
        };
        assert_eq!(v("10s"), "10s");
        assert_eq!(v("127.0.0.1:9822"), "127.0.0.1:9822");
        assert_eq!(v(""), "\"\"");
        assert_eq!(v("two words"), "\"two words\"");
        assert_eq!(v("a=b"), "\"a=b\"");
        assert_eq!(v("say \"hi\"\nback\\slash"), "\"say \\\"hi\\\"\\nback\\\\slash\"");
    }
}
