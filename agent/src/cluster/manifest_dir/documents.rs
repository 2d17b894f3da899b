//! The documents of a YAML stream, found by their `---` separator lines, so that each is
//! parsed on its own (a broken one does not hide the others) and one can be rewritten
//! while the rest of the file stays byte for byte as it was.
//!
//! A separator is a line starting with `---` followed by nothing or whitespace, at
//! column 0, as in every manifest kubectl writes. (A quoted multi-line scalar with a line
//! `---` at column 0 would be split wrongly; manifests do not have those.)
use std::ops::Range;

/// One document of a file: its bytes and where it starts, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Document<'a> {
    /// 1-based position among the file's non-empty documents.
    pub index: usize,
    /// 1-based line of the document's first line.
    pub line: usize,
    /// The bytes of the file holding the document (separator lines excluded).
    pub span: Range<usize>,
    pub text: &'a str,
}

/// The non-empty documents of `text` (blank and comment-only ones are skipped).
pub(super) fn documents(text: &str) -> Vec<Document<'_>> {
    let mut chunks = Vec::new();
    let (mut start, mut start_line, mut offset) = (0, 1, 0);
    for (number, line) in text.split_inclusive('\n').enumerate() {
        if is_separator(line) {
            chunks.push((start..offset, start_line));
            start = offset + line.len();
            start_line = number + 2;
        }
        offset += line.len();
    }
    chunks.push((start..text.len(), start_line));
    chunks
        .into_iter()
        .filter(|(span, _)| !is_empty(&text[span.clone()]))
        .enumerate()
        .map(|(position, (span, line))| Document {
            index: position + 1,
            line,
            text: &text[span.clone()],
            span,
        })
        .collect()
}

fn is_separator(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.chars().all(char::is_whitespace))
}

fn is_empty(document: &str) -> bool {
    document.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "..."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_separator_lines_and_skips_empty_documents() {
        let text = "---\na: 1\n---\n# only a comment\n---   \nb: 2\nc: ---\n";
        let docs = documents(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(
            (docs[0].index, docs[0].line, docs[0].text),
            (1, 2, "a: 1\n")
        );
        assert_eq!(
            (docs[1].index, docs[1].line, docs[1].text),
            (2, 6, "b: 2\nc: ---\n")
        );
        assert_eq!(&text[docs[1].span.clone()], docs[1].text);
    }

    #[test]
    fn a_single_document_without_separator_is_the_whole_file() {
        let docs = documents("{\"kind\": \"Namespace\"}");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].span, 0..21);
    }
}
