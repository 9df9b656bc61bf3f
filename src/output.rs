//! What the admin commands (`leases`, `gc`, `ps`) print: text tables of a
//! header and rows, each column as wide as its widest cell, two spaces
//! apart, the last column left ragged; or pretty JSON. Cells are printed
//! as given: callers escape foreign text (`crate::escape`) first.

use serde::Serialize;

use crate::error::Error;

/// `v` as pretty-printed JSON.
pub fn json<T: Serialize>(v: &T) -> Result<String, Error> {
    serde_json::to_string_pretty(v).map_err(|e| Error::Io { what: "encoding JSON", err: e.into() })
}

/// `header` and `rows` as lines of aligned columns, each ending in '\n'.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s += c;
            } else {
                s += &format!("{c:<w$}  ", w = widths[i]);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out += &line(r.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_the_last_is_ragged() {
        let rows =
            vec![vec!["a".to_string(), "long cell".into(), "x".into()], vec!["bb".into(), "c".into(), "".into()]];
        assert_eq!(table(&["H1", "H2", "H3"], &rows), "H1  H2         H3\na   long cell  x\nbb  c\n");
        assert_eq!(table(&["ID", "PID"], &[]), "ID  PID\n");
    }
}
