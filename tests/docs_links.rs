//! The documentation's relative links, checked: every link in README.md and
//! docs/*.md that is not a URL must point to a file or directory of the
//! repository, and a `#fragment` must name a heading of the page it points
//! to (GitHub's anchors). Links inside code (fenced blocks, inline code)
//! are not links. A failure names the file and line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and docs/*.md.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The lines of `text` outside fenced code blocks: their numbers, the
/// lines as written, and the lines with inline code spans blanked.
fn prose(text: &str) -> Vec<(usize, &str, String)> {
    let mut out = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let run = |c: char| trimmed.chars().take_while(|x| *x == c).count();
        let opened = ['`', '~'].into_iter().find(|c| run(*c) >= 3);
        match (fence, opened) {
            (Some((c, n)), Some(o))
                if o == c && run(c) >= n && trimmed.trim_end().chars().all(|x| x == c) =>
            {
                fence = None;
            }
            (Some(_), _) => {}
            (None, Some(c)) => fence = Some((c, run(c))),
            (None, None) => out.push((i + 1, line, blank_code(line))),
        }
    }
    out
}

/// `line` with the contents of inline code spans replaced by spaces.
fn blank_code(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '`' {
            let n = chars[i..].iter().take_while(|c| **c == '`').count();
            let close = (i + n..chars.len()).find(|&j| {
                chars[j..].iter().take_while(|c| **c == '`').count() == n
                    && (j == 0 || chars[j - 1] != '`')
            });
            if let Some(j) = close {
                out.extend(std::iter::repeat_n(' ', j + n - i));
                i = j + n;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// The link targets on one line of prose: inline `[text](target)`,
/// images, and reference definitions `[label]: target`.
fn targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let mut depth = 0usize;
        let end = after
            .char_indices()
            .find(|(_, c)| match c {
                '(' => {
                    depth += 1;
                    false
                }
                ')' if depth == 0 => true,
                ')' => {
                    depth -= 1;
                    false
                }
                _ => false,
            })
            .map_or(after.len(), |(i, _)| i);
        let inner = after[..end].trim();
        let target = match inner.strip_prefix('<') {
            Some(angled) => angled.split('>').next().unwrap_or(""),
            None => inner.split_whitespace().next().unwrap_or(""),
        };
        out.push(target.to_owned());
        rest = &after[end.min(after.len())..];
    }
    let trimmed = line.trim_start();
    if trimmed.starts_with('[')
        && let Some(close) = trimmed.find("]:")
        && !trimmed[1..close].contains(']')
        && let Some(target) = trimmed[close + 2..].split_whitespace().next()
    {
        out.push(target.to_owned());
    }
    out
}

/// GitHub's anchors for the headings of `text`: lower case, punctuation
/// dropped, spaces as hyphens, repeats numbered `-1`, `-2`...
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (_, raw, _) in prose(text) {
        let trimmed = raw.trim_start();
        let hashes = trimmed.chars().take_while(|c| *c == '#').count();
        if hashes == 0 || hashes > 6 || !trimmed[hashes..].starts_with(' ') {
            continue;
        }
        // The heading's text as rendered, code spans kept.
        let title = trimmed[hashes..].trim().trim_end_matches('#').trim();
        let title = strip_links(title);
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.push(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// `[text](target)` → `text`.
fn strip_links(title: &str) -> String {
    let mut out = String::new();
    let mut rest = title;
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](") else {
            break;
        };
        let Some(close) = rest[open + mid..].find(')') else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..open + mid]);
        rest = &rest[open + mid + close + 1..];
    }
    out.push_str(rest);
    out
}

/// Every broken relative link of the document at `path` (its text `text`),
/// as `FILE:LINE: why`, with `shown` naming the file.
fn broken_links(path: &Path, shown: &str, text: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let dir = path.parent().unwrap();
    for (line, _, prose_line) in prose(text) {
        for target in targets(&prose_line) {
            if target.is_empty()
                || target.contains("://")
                || target.starts_with("mailto:")
                || target.starts_with("tel:")
            {
                continue;
            }
            let (file, fragment) = match target.split_once('#') {
                Some((f, frag)) => (f, Some(frag)),
                None => (target.as_str(), None),
            };
            if file.is_empty() {
                // This page's own heading.
                if let Some(fragment) = fragment
                    && !anchors(text).iter().any(|a| a == fragment)
                {
                    errors.push(format!(
                        "{shown}:{line}: `{target}`: no heading with anchor #{fragment}"
                    ));
                }
                continue;
            }
            let resolved = dir.join(file);
            if !resolved.exists() {
                errors.push(format!(
                    "{shown}:{line}: `{target}`: no such file {}",
                    resolved.display()
                ));
                continue;
            }
            let Some(fragment) = fragment else { continue };
            if resolved.extension().is_none_or(|e| e != "md") {
                continue;
            }
            let page = std::fs::read_to_string(&resolved).unwrap();
            if !anchors(&page).iter().any(|a| a == fragment) {
                errors.push(format!(
                    "{shown}:{line}: `{target}`: no heading with anchor #{fragment}"
                ));
            }
        }
    }
    errors
}

#[test]
fn relative_links_in_the_readme_and_docs_resolve() {
    let root = root();
    let mut errors = Vec::new();
    let mut checked = 0;
    for path in documents(&root) {
        let text = std::fs::read_to_string(&path).unwrap();
        let shown = path.strip_prefix(&root).unwrap().display().to_string();
        checked += prose(&text)
            .iter()
            .map(|(_, _, l)| targets(l).len())
            .sum::<usize>();
        errors.extend(broken_links(&path, &shown, &text));
    }
    // The docs link to each other: a parser that found no link would check nothing.
    assert!(checked >= 20, "found only {checked} links");
    assert!(errors.is_empty(), "broken links:\n{}", errors.join("\n"));
}

#[test]
fn a_broken_link_or_anchor_is_reported_with_its_file_and_line() {
    let root = root();
    let text = "# Top\n\n## A `code` heading, here\n\n\
                [ok](../README.md) [self](#top) [code](#a-code-heading-here) `[not](a-link.md)`\n\
                [gone](no-such-page.md)\n\
                ```text\n[in a block](nowhere.md)\n```\n\
                [bad anchor](#nowhere) ![img](../config/grafana/rpcgate.png)\n\
                [ref]: ../LICENSE\n\
                [ref2]: ../NO-LICENSE\n";
    let errors = broken_links(&root.join("docs/x.md"), "docs/x.md", text);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].starts_with("docs/x.md:6: `no-such-page.md`"),
        "{errors:#?}"
    );
    assert!(
        errors[1].starts_with("docs/x.md:10: `#nowhere`"),
        "{errors:#?}"
    );
    assert!(
        errors[2].starts_with("docs/x.md:12: `../NO-LICENSE`"),
        "{errors:#?}"
    );
}
