//! A lenient PEM block scanner that reads files the way Go's `encoding/pem`
//! `Decode` loop in kube-apiserver does: text around blocks is ignored, RFC 1421
//! headers (`Proc-Type: ...`) are kept aside, a malformed block is skipped.

use base64::Engine;
use zeroize::Zeroizing;

/// One `-----BEGIN LABEL----- ... -----END LABEL-----` block.
pub(crate) struct Block {
    /// 1-based position of the block in the file, for messages.
    pub index: usize,
    pub label: String,
    pub headers: Vec<(String, String)>,
    /// The decoded body. May be private key material, so it is wiped on drop.
    pub der: Zeroizing<Vec<u8>>,
}

impl Block {
    /// Legacy OpenSSL encryption (`Proc-Type: 4,ENCRYPTED`) or a PKCS#8
    /// `ENCRYPTED PRIVATE KEY`.
    pub fn is_encrypted(&self) -> bool {
        self.label == "ENCRYPTED PRIVATE KEY"
            || self
                .headers
                .iter()
                .any(|(k, v)| k == "Proc-Type" && v.contains("ENCRYPTED"))
    }

    /// `block 2 (PUBLIC KEY)`, for messages.
    pub fn describe(&self) -> String {
        format!("block {} ({})", self.index, self.label)
    }
}

/// What the scanner found: the blocks it could decode and a note for each
/// block it could not (bad base64, missing END line).
pub(crate) struct Scan {
    pub blocks: Vec<Block>,
    pub broken: Vec<String>,
}

fn label_of<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    line.strip_prefix(prefix)?.strip_suffix("-----")
}

pub(crate) fn scan(data: &[u8]) -> Scan {
    // PEM is ASCII; invalid UTF-8 outside blocks is as irrelevant as to Go.
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines().map(str::trim_end);
    let mut blocks = Vec::new();
    let mut broken = Vec::new();
    let mut index = 0;
    while let Some(line) = lines.next() {
        let Some(label) = label_of(line, "-----BEGIN ") else {
            continue;
        };
        index += 1;
        let label = label.to_string();
        let end = format!("-----END {label}-----");
        let mut headers = Vec::new();
        let mut body = Zeroizing::new(String::new());
        let mut in_headers = true;
        let mut closed = false;
        for line in lines.by_ref() {
            if line == end {
                closed = true;
                break;
            }
            if in_headers {
                if let Some((k, v)) = line.split_once(':') {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                    continue;
                }
                in_headers = false;
                if line.is_empty() {
                    continue;
                }
            }
            body.push_str(line.trim());
        }
        if !closed {
            broken.push(format!("block {index} ({label}): no {end} line"));
            break;
        }
        match base64::engine::general_purpose::STANDARD.decode(body.as_bytes()) {
            Ok(der) => blocks.push(Block {
                index,
                label,
                headers,
                der: Zeroizing::new(der),
            }),
            Err(e) => broken.push(format!("block {index} ({label}): bad base64: {e}")),
        }
    }
    Scan { blocks, broken }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_blocks_between_text_and_keeps_headers() {
        let data = b"comment\n-----BEGIN A-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: x\n\nAQID\n-----END A-----\nmore\n-----BEGIN B C-----\nBAUG\n-----END B C-----\n";
        let s = scan(data);
        assert!(s.broken.is_empty());
        assert_eq!(s.blocks.len(), 2);
        assert_eq!(s.blocks[0].label, "A");
        assert!(s.blocks[0].is_encrypted());
        assert_eq!(&s.blocks[0].der[..], &[1, 2, 3]);
        assert_eq!(s.blocks[1].label, "B C");
        assert_eq!(s.blocks[1].index, 2);
        assert_eq!(&s.blocks[1].der[..], &[4, 5, 6]);
    }

    #[test]
    fn reports_broken_blocks() {
        let s = scan(b"-----BEGIN A-----\n!!!!\n-----END A-----\n-----BEGIN B-----\nAQID\n");
        assert!(s.blocks.is_empty());
        assert_eq!(s.broken.len(), 2);
        assert!(s.broken[0].contains("bad base64"), "{}", s.broken[0]);
        assert!(s.broken[1].contains("no -----END B----- line"));
    }
}
