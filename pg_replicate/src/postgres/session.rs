//! Session settings applied to every connection this library opens, so that
//! values in text form (pgoutput, `::text` casts in COPY) have one format.

/// `(name, value)` run-time parameters sent in the startup packet of every
/// connection (replication and ordinary). Text-form value decoders rely on
/// these formats.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "iso_8601"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
];

/// The settings as a libpq `options` string: `-c name=value ...`, with
/// spaces in values escaped by a backslash.
pub fn options_string() -> String {
    let mut out = String::new();
    for (name, value) in SESSION_SETTINGS {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("-c ");
        out.push_str(name);
        out.push('=');
        for c in value.chars() {
            if c == ' ' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn options_escape_spaces() {
        let options = super::options_string();
        assert!(options.starts_with("-c DateStyle=ISO,\\ YMD -c IntervalStyle=iso_8601"));
    }
}
