//! Marked sections: tailprobe owns the text between
//! `<!-- tailprobe:begin ID -->` and `<!-- tailprobe:end ID -->` lines and
//! nothing else. Re-rendering replaces only those sections and keeps what
//! people wrote around them; a file whose markers are broken is refused
//! (nothing is changed). Pure.

pub const BEGIN: &str = "<!-- tailprobe:begin ";
pub const END: &str = "<!-- tailprobe:end ";
const CLOSE: &str = " -->";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MarkerError {
    #[error("line {line}: section {id:?} is opened but never closed (add `<!-- tailprobe:end {id} -->`)")]
    Unclosed { id: String, line: usize },
    #[error("line {line}: `tailprobe:end {id}` without a matching begin")]
    Unopened { id: String, line: usize },
    #[error(
        "line {line}: section {inner:?} begins inside section {outer:?} (sections cannot nest)"
    )]
    Nested {
        outer: String,
        inner: String,
        line: usize,
    },
    #[error("line {line}: section {open:?} is closed by `tailprobe:end {close}`")]
    Mismatch {
        open: String,
        close: String,
        line: usize,
    },
    #[error("line {line}: section {id:?} appears twice")]
    Duplicate { id: String, line: usize },
    #[error("line {line}: malformed tailprobe marker {text:?} (expected `<!-- tailprobe:begin ID -->` on its own line)")]
    Malformed { line: usize, text: String },
}

/// A marked section: its id and the line range of its body (exclusive of
/// the marker lines), 0-based.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub id: String,
    pub begin_line: usize,
    pub end_line: usize,
}

fn marker(line: &str) -> Option<Result<(bool, String), ()>> {
    let t = line.trim();
    // Only HTML comments are markers; prose that names them is not.
    if !t.starts_with("<!--") || (!t.contains("tailprobe:begin") && !t.contains("tailprobe:end")) {
        return None;
    }
    let parse = |rest: &str| -> Result<String, ()> {
        let id = rest.strip_suffix(CLOSE).ok_or(())?.trim();
        if id.is_empty() || id.contains(char::is_whitespace) {
            return Err(());
        }
        Ok(id.to_string())
    };
    Some(if let Some(rest) = t.strip_prefix(BEGIN) {
        parse(rest).map(|id| (true, id))
    } else if let Some(rest) = t.strip_prefix(END) {
        parse(rest).map(|id| (false, id))
    } else {
        Err(())
    })
}

/// Every marked section of `text`, or why the markers are broken.
pub fn spans(text: &str) -> Result<Vec<Span>, MarkerError> {
    let mut out: Vec<Span> = Vec::new();
    let mut open: Option<(String, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let Some(m) = marker(line) else { continue };
        let (is_begin, id) = m.map_err(|_| MarkerError::Malformed {
            line: n,
            text: line.trim().to_string(),
        })?;
        match (is_begin, &open) {
            (true, Some((outer, _))) => {
                return Err(MarkerError::Nested {
                    outer: outer.clone(),
                    inner: id,
                    line: n,
                })
            }
            (true, None) => {
                if out.iter().any(|s| s.id == id) {
                    return Err(MarkerError::Duplicate { id, line: n });
                }
                open = Some((id, i));
            }
            (false, None) => return Err(MarkerError::Unopened { id, line: n }),
            (false, Some((o, start))) => {
                if *o != id {
                    return Err(MarkerError::Mismatch {
                        open: o.clone(),
                        close: id,
                        line: n,
                    });
                }
                out.push(Span {
                    id,
                    begin_line: start + 1,
                    end_line: i,
                });
                open = None;
            }
        }
    }
    if let Some((id, start)) = open {
        return Err(MarkerError::Unclosed {
            id,
            line: start + 1,
        });
    }
    Ok(out)
}

fn block(id: &str, body: &str) -> String {
    format!(
        "{BEGIN}{id}{CLOSE}\n{}\n{END}{id}{CLOSE}\n",
        body.trim_end_matches('\n')
    )
}

/// The document: `existing` with each generated section's body replaced,
/// sections it lacks appended, everything else kept byte for byte. With no
/// existing file: `preamble` and every section.
pub fn merge(
    existing: Option<&str>,
    preamble: &str,
    sections: &[(String, String)],
) -> Result<String, MarkerError> {
    let Some(text) = existing else {
        let mut s = preamble.trim_end().to_string();
        s.push_str("\n\n");
        for (id, body) in sections {
            s.push_str(&block(id, body));
            s.push('\n');
        }
        return Ok(s);
    };
    let sp = spans(text)?;
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::with_capacity(text.len() + 1024);
    let mut i = 0;
    while i < lines.len() {
        if let Some(s) = sp.iter().find(|s| s.begin_line == i + 1) {
            out.push_str(lines[i]);
            out.push('\n');
            match sections.iter().find(|(id, _)| *id == s.id) {
                Some((_, body)) => {
                    out.push_str(body.trim_end_matches('\n'));
                    out.push('\n');
                }
                None => {
                    for l in &lines[s.begin_line..s.end_line] {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
            out.push_str(lines[s.end_line]);
            out.push('\n');
            i = s.end_line + 1;
            continue;
        }
        out.push_str(lines[i]);
        out.push('\n');
        i += 1;
    }
    if !text.ends_with('\n') && out.ends_with('\n') {
        out.pop();
    }
    for (id, body) in sections {
        if !sp.iter().any(|s| s.id == *id) {
            if !out.ends_with("\n\n") {
                out.push('\n');
            }
            out.push_str(&block(id, body));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn fresh_document_then_rerender_keeps_people_text() {
        let first = merge(None, "# Title", &secs(&[("a", "one"), ("b", "two")])).unwrap();
        assert_eq!(
            first,
            "# Title\n\n<!-- tailprobe:begin a -->\none\n<!-- tailprobe:end a -->\n\n<!-- tailprobe:begin b -->\ntwo\n<!-- tailprobe:end b -->\n\n"
        );
        // Someone writes around and between the sections.
        let edited = first
            .replace("# Title\n", "# Title\n\nOur notes: keep me.\n")
            .replace(
                "<!-- tailprobe:end a -->\n",
                "<!-- tailprobe:end a -->\n\nBetween, by hand.\n",
            );
        let again = merge(
            Some(&edited),
            "# ignored",
            &secs(&[("a", "ONE"), ("b", "TWO"), ("c", "new")]),
        )
        .unwrap();
        assert!(again.contains("Our notes: keep me.\n"));
        assert!(again.contains("Between, by hand.\n"));
        assert!(again.contains("begin a -->\nONE\n<!-- tailprobe:end a"));
        assert!(again.contains("begin b -->\nTWO\n"));
        assert!(!again.contains("one\n") && !again.contains("# ignored"));
        assert!(again.trim_end().ends_with("<!-- tailprobe:end c -->"));
        // Idempotent.
        let third = merge(
            Some(&again),
            "#",
            &secs(&[("a", "ONE"), ("b", "TWO"), ("c", "new")]),
        )
        .unwrap();
        assert_eq!(third, again);
    }

    #[test]
    fn sections_not_generated_are_left_alone() {
        let t = "x\n<!-- tailprobe:begin old -->\nkept\n<!-- tailprobe:end old -->\ny\n";
        let m = merge(Some(t), "", &[]).unwrap();
        assert_eq!(m, t);
    }

    #[test]
    fn broken_markers_are_refused() {
        let e = |t: &str| merge(Some(t), "", &secs(&[("a", "x")])).unwrap_err();
        assert_eq!(
            e("<!-- tailprobe:begin a -->\nx\n"),
            MarkerError::Unclosed {
                id: "a".into(),
                line: 1
            }
        );
        assert_eq!(
            e("x\n<!-- tailprobe:end a -->\n"),
            MarkerError::Unopened {
                id: "a".into(),
                line: 2
            }
        );
        assert!(matches!(
            e("<!-- tailprobe:begin a -->\n<!-- tailprobe:begin b -->\n<!-- tailprobe:end b -->\n<!-- tailprobe:end a -->\n"),
            MarkerError::Nested { .. }
        ));
        assert!(matches!(
            e("<!-- tailprobe:begin a -->\n<!-- tailprobe:end b -->\n"),
            MarkerError::Mismatch { .. }
        ));
        assert!(matches!(
            e("<!-- tailprobe:begin a -->\n<!-- tailprobe:end a -->\n<!-- tailprobe:begin a -->\n<!-- tailprobe:end a -->\n"),
            MarkerError::Duplicate { line: 3, .. }
        ));
        assert!(merge(Some("See `tailprobe:begin` markers.\n"), "", &[]).is_ok());
        let m = e("<!-- tailprobe:begin a\n");
        assert!(m.to_string().contains("malformed"), "{m}");
    }
}
