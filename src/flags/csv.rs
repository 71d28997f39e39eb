//! `--api-audiences` values as kube-apiserver reads them: pflag's StringSlice
//! `readAsCSV`, i.e. `""` is no value, anything else is ONE record of Go's
//! `encoding/csv` with the default reader settings (comma separator, fields
//! may be double-quoted, `""` inside quotes is one quote, a quote inside an
//! unquoted field is an error, nothing is trimmed). And the writer whose
//! output reads back as the same values.

use anyhow::{bail, Result};

/// The values pflag reads from one `--api-audiences` value. `"a,b",c` is two
/// values, `a,,b` three (the middle one empty), a lone `"` an error.
pub fn read_csv(value: &str) -> Result<Vec<String>> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    // encoding/csv reads one record: a line break outside quotes ends it;
    // lines that are empty before the record are skipped.
    let mut fields = Vec::new();
    let mut chars = value.trim_start_matches(['\n', '\r']).chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => bail!("extraneous or missing \" in quoted-field"),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            let c = chars.next();
            if ends_record(c, chars.peek()) {
                fields.push(field);
                return Ok(fields);
            }
            match c {
                Some(',') => fields.push(field),
                _ => bail!("extraneous or missing \" in quoted-field"),
            }
        } else {
            loop {
                let c = chars.next();
                if ends_record(c, chars.peek()) {
                    fields.push(field);
                    return Ok(fields);
                }
                match c {
                    Some(',') => {
                        fields.push(field);
                        break;
                    }
                    Some('"') => bail!("bare \" in non-quoted-field"),
                    // Never None: the end of the text ends the record above.
                    c => field.extend(c),
                }
            }
        }
    }
}

/// `c` (followed by `next`) ends the record: the end of the text, a line
/// break, or a `\r` before either.
fn ends_record(c: Option<char>, next: Option<&char>) -> bool {
    match c {
        None | Some('\n') => true,
        Some('\r') => matches!(next, None | Some('\n')),
        _ => false,
    }
}

/// One `--api-audiences` value that [`read_csv`] reads back as `values`:
/// a value holding a comma, a quote or a line break is quoted.
pub fn write_csv(values: &[String]) -> String {
    values
        .iter()
        .map(|v| {
            if v.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", v.replace('"', "\"\""))
            } else {
                v.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: &str) -> Vec<String> {
        read_csv(v).unwrap()
    }

    #[test]
    fn reads_like_pflag_read_as_csv() {
        assert!(r("").is_empty());
        assert_eq!(r("a"), ["a"]);
        assert_eq!(r("\"a,b\",c"), ["a,b", "c"]);
        assert_eq!(r("a,,b"), ["a", "", "b"]);
        assert_eq!(r("a,"), ["a", ""]);
        assert_eq!(r("\"x\"\"y\""), ["x\"y"]);
        assert_eq!(r(" a "), [" a "], "nothing is trimmed");
        assert_eq!(r("a\nb"), ["a"], "one record");
        for bad in ["\"", "a\"b", "\"a\"b", " \"a\""] {
            assert!(read_csv(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn written_values_read_back() {
        for vals in [
            vec!["a"],
            vec!["a,b", "c"],
            vec!["q\"uote", "x"],
            vec!["https://k.svc", "sts.amazonaws.com"],
        ] {
            let vals: Vec<String> = vals.into_iter().map(String::from).collect();
            let w = write_csv(&vals);
            assert_eq!(read_csv(&w).unwrap(), vals, "{w}");
        }
        assert_eq!(write_csv(&["a".into(), "b".into()]), "a,b");
    }
}
