//! One line of the Prometheus text format, read back for `/stats`:
//! `name{label="value",...} value` (comments and blank lines are skipped).

/// One line of Prometheus text: `name{label="value",...} value`.
#[derive(Debug)]
pub(super) struct Series<'a> {
    pub(super) name: &'a str,
    labels: Vec<(&'a str, String)>,
    pub(super) value: f64,
}

impl<'a> Series<'a> {
    pub(super) fn parse(line: &'a str) -> Option<Self> {
        if line.starts_with('#') || line.trim().is_empty() {
            return None;
        }
        let (head, value) = line.trim_end().rsplit_once(' ')?;
        let value: f64 = value.parse().ok()?;
        let (name, labels) = match head.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
            None => (head, Vec::new()),
        };
        Some(Self {
            name,
            labels,
            value,
        })
    }

    pub(super) fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `a="x",b="y\"z"` into pairs, unescaping `\\`, `\"` and `\n`.
fn parse_labels(mut text: &str) -> Option<Vec<(&str, String)>> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches(',');
        if text.is_empty() {
            return Some(labels);
        }
        let (name, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name, value));
        text = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::Series;

    #[test]
    fn labels_are_unescaped() {
        let series = Series::parse(r#"x{a="1",b="q\"u\\o\nte"} 2.5"#).unwrap();
        assert_eq!(series.name, "x");
        assert_eq!(series.label("a"), Some("1"));
        assert_eq!(series.label("b"), Some("q\"u\\o\nte"));
        assert_eq!(series.value, 2.5);
        assert!(Series::parse("# HELP x").is_none());
        assert!(Series::parse("plain 3").is_some_and(|s| s.labels.is_empty()));
    }
}
