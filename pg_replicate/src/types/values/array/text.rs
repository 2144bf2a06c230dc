//! The text form of arrays (`array_out`, as pgoutput and text-form COPY
//! values carry it): bounds decoration, nested braces, quoting.

use super::{ListBuilder, Shape, MAX_DIMENSIONS};
use crate::types::values::error::{DecodeResult, Fault};

const NOT_BRACED: Fault = Fault::Malformed("array text is not {...}");

impl ListBuilder {
    /// Parses a text array value, appending its elements; returns its shape.
    pub(super) fn decode_text(&mut self, value: &[u8]) -> DecodeResult<Shape> {
        let (declared, s) = parse_bounds(value)?;
        let mut s = s.strip_prefix(b"{").ok_or(NOT_BRACED)?.trim_ascii_start();
        if let Some(rest) = s.strip_prefix(b"}") {
            return match declared {
                None if rest.trim_ascii().is_empty() => Ok(Shape::default()),
                _ => Err(NOT_BRACED),
            };
        }
        let mut shape = Shape::default();
        // Elements (or sub-arrays) seen so far in the open array of each level.
        let mut counts = [0i32; MAX_DIMENSIONS];
        // Sizes known for each level (after its first sub-array closed).
        let mut known = [false; MAX_DIMENSIONS];
        let mut depth = 1;
        loop {
            // An item of the array at `depth`: a sub-array or an element.
            s = s.trim_ascii_start();
            match s.first() {
                Some(b'{') => {
                    if depth == MAX_DIMENSIONS || (shape.ndim != 0 && depth >= shape.ndim) {
                        return Err(Fault::Malformed("array text nests its braces unevenly"));
                    }
                    depth += 1;
                    s = &s[1..];
                    continue;
                }
                Some(first) => {
                    if shape.ndim == 0 {
                        shape.ndim = depth;
                    } else if shape.ndim != depth {
                        return Err(Fault::Malformed("array text nests its braces unevenly"));
                    }
                    s = if *first == b'"' {
                        self.quoted_element(&s[1..])?
                    } else {
                        self.unquoted_element(s)?
                    };
                    counts[depth - 1] += 1;
                }
                None => return Err(NOT_BRACED),
            }
            // After an item: closing braces, then a delimiter or the end.
            loop {
                s = s.trim_ascii_start();
                match s.split_first() {
                    Some((&b'}', rest)) => {
                        let level = depth - 1;
                        if !known[level] {
                            known[level] = true;
                            shape.dims[level] = counts[level];
                        } else if shape.dims[level] != counts[level] {
                            return Err(Fault::Malformed(
                                "array text has sub-arrays of different sizes",
                            ));
                        }
                        counts[level] = 0;
                        depth = level;
                        s = rest;
                        if depth == 0 {
                            if !s.trim_ascii().is_empty() {
                                return Err(NOT_BRACED);
                            }
                            return apply_declared_bounds(shape, declared);
                        }
                        counts[depth - 1] += 1;
                    }
                    Some((&b, rest)) if b == self.delimiter => {
                        s = rest;
                        break;
                    }
                    _ => return Err(NOT_BRACED),
                }
            }
        }
    }

    /// Appends the element after an opening quote; returns what follows the
    /// closing quote.
    fn quoted_element<'a>(&mut self, s: &'a [u8]) -> DecodeResult<&'a [u8]> {
        const UNTERMINATED: Fault = Fault::Malformed("array text has an unterminated quote");
        let end = memchr::memchr2(b'"', b'\\', s).ok_or(UNTERMINATED)?;
        if s[end] == b'"' {
            self.values.append_text(&s[..end])?;
            return Ok(&s[end + 1..]);
        }
        // Escapes: de-escape into the scratch buffer.
        self.scratch.clear();
        let mut i = 0;
        loop {
            match s.get(i) {
                None => return Err(UNTERMINATED),
                Some(b'"') => break,
                Some(b'\\') => {
                    self.scratch.push(*s.get(i + 1).ok_or(UNTERMINATED)?);
                    i += 2;
                }
                Some(&b) => {
                    self.scratch.push(b);
                    i += 1;
                }
            }
        }
        self.values.append_text(&self.scratch)?;
        Ok(&s[i + 1..])
    }

    /// Appends an unquoted element (`NULL` is a NULL); returns what follows.
    fn unquoted_element<'a>(&mut self, s: &'a [u8]) -> DecodeResult<&'a [u8]> {
        let delimiter = self.delimiter;
        let end = s
            .iter()
            .position(|&b| b == delimiter || b == b'}' || b == b'\\' || b == b'"' || b == b'{')
            .unwrap_or(s.len());
        match s.get(end) {
            Some(b'\\') => {}
            Some(b'"' | b'{') => {
                return Err(Fault::Malformed(
                    "array text has a misplaced quote or brace",
                ))
            }
            _ => {
                let element = s[..end].trim_ascii_end();
                if element.is_empty() {
                    return Err(Fault::Malformed("array text has an empty unquoted element"));
                } else if element.eq_ignore_ascii_case(b"NULL") {
                    self.values.append_null();
                } else {
                    self.values.append_text(element)?;
                }
                return Ok(&s[end..]);
            }
        }
        // array_out quotes every element with a backslash, but array_in
        // accepts escapes in unquoted elements too.
        self.scratch.clear();
        let mut i = 0;
        while let Some(&b) = s.get(i) {
            if b == delimiter || b == b'}' {
                break;
            }
            if b == b'\\' {
                self.scratch.push(
                    *s.get(i + 1)
                        .ok_or(Fault::Malformed("array text ends in a backslash"))?,
                );
                i += 2;
            } else {
                self.scratch.push(b);
                i += 1;
            }
        }
        let trimmed = self.scratch.trim_ascii_end().len();
        self.scratch.truncate(trimmed);
        self.values.append_text(&self.scratch)?;
        Ok(&s[i..])
    }
}

/// Dimensions declared by a `[lo:hi]...=` decoration: per dimension the
/// lower bound and the size.
#[derive(Clone, Copy, Debug)]
struct Declared {
    ndim: usize,
    lower_bounds: [i32; MAX_DIMENSIONS],
    sizes: [i64; MAX_DIMENSIONS],
}

/// Reads a `[lo:hi]...=` bounds decoration (`[hi]` means `[1:hi]`);
/// returns it, if any, and the text after it.
fn parse_bounds(value: &[u8]) -> DecodeResult<(Option<Declared>, &[u8])> {
    const BAD: Fault = Fault::Malformed("array text has malformed bounds");
    let mut s = value.trim_ascii_start();
    let mut declared = Declared {
        ndim: 0,
        lower_bounds: [1; MAX_DIMENSIONS],
        sizes: [0; MAX_DIMENSIONS],
    };
    while let Some(rest) = s.strip_prefix(b"[") {
        let close = memchr::memchr(b']', rest).ok_or(BAD)?;
        let bounds = std::str::from_utf8(&rest[..close]).map_err(|_| BAD)?;
        let (lower, upper) = match bounds.split_once(':') {
            Some((lower, upper)) => (lower, upper),
            None => ("1", bounds),
        };
        let number = |t: &str| t.trim().parse::<i32>().map_err(|_| BAD);
        let (lower, upper) = (number(lower)?, number(upper)?);
        if declared.ndim == MAX_DIMENSIONS || i64::from(upper) < i64::from(lower) - 1 {
            return Err(BAD);
        }
        declared.lower_bounds[declared.ndim] = lower;
        declared.sizes[declared.ndim] = i64::from(upper) - i64::from(lower) + 1;
        declared.ndim += 1;
        s = rest[close + 1..].trim_ascii_start();
    }
    if declared.ndim == 0 {
        return Ok((None, s));
    }
    let s = s.strip_prefix(b"=").ok_or(BAD)?.trim_ascii_start();
    Ok((Some(declared), s))
}

/// The parsed shape with the declared lower bounds; the declared sizes must
/// be the parsed ones.
fn apply_declared_bounds(mut shape: Shape, declared: Option<Declared>) -> DecodeResult<Shape> {
    let Some(declared) = declared else {
        shape.lower_bounds[..shape.ndim].fill(1);
        return Ok(shape);
    };
    let sizes_match = declared.ndim == shape.ndim
        && (0..shape.ndim).all(|d| declared.sizes[d] == i64::from(shape.dims[d]));
    if !sizes_match {
        return Err(Fault::Malformed(
            "array text's bounds differ from its elements' dimensions",
        ));
    }
    shape.lower_bounds = declared.lower_bounds;
    Ok(shape)
}
