//! [`TopicPattern`]: a topic glob compiled once.
//!
//! The syntax is globset's, with no path semantics: `*` matches any run of characters
//! (dots included, so `job.*` covers `job.a.b`), `?` one character, `[...]` / `[!...]` a
//! class, `{a,b}` alternatives, `\` escapes. Comparison is case-sensitive. The common
//! shapes (`*`, a literal, `prefix*`, `*suffix`) skip the regex engine entirely.

use globset::GlobBuilder;

/// A compiled topic pattern.
#[derive(Debug, Clone)]
pub(crate) enum TopicPattern {
    /// `*`: every topic.
    Any,
    /// No metacharacters: equality.
    Exact(Box<str>),
    /// `literal*`.
    Prefix(Box<str>),
    /// `*literal`.
    Suffix(Box<str>),
    /// Anything else.
    Glob(globset::GlobMatcher),
}

fn is_meta(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\')
}

impl TopicPattern {
    /// Compiles a pattern (surrounding spaces ignored). The error says what is wrong.
    pub(crate) fn compile(pattern: &str) -> Result<Self, String> {
        let p = pattern.trim();
        if p.is_empty() {
            return Err("empty topic pattern".into());
        }
        // Validate the full syntax first, so every shape reports errors the same way.
        let glob = GlobBuilder::new(p)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("invalid topic pattern `{p}`: {}", e.kind()))?;
        if p.chars().all(|c| c == '*') {
            return Ok(TopicPattern::Any);
        }
        if !p.contains(is_meta) {
            return Ok(TopicPattern::Exact(p.into()));
        }
        if let Some(prefix) = p.strip_suffix('*')
            && !prefix.contains(is_meta)
        {
            return Ok(TopicPattern::Prefix(prefix.into()));
        }
        if let Some(suffix) = p.strip_prefix('*')
            && !suffix.contains(is_meta)
        {
            return Ok(TopicPattern::Suffix(suffix.into()));
        }
        Ok(TopicPattern::Glob(glob.compile_matcher()))
    }

    /// Whether `topic` matches.
    #[inline]
    pub(crate) fn matches(&self, topic: &str) -> bool {
        match self {
            TopicPattern::Any => true,
            TopicPattern::Exact(s) => topic == &**s,
            TopicPattern::Prefix(s) => topic.starts_with(&**s),
            TopicPattern::Suffix(s) => topic.ends_with(&**s),
            TopicPattern::Glob(g) => g.is_match(topic),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        TopicPattern::compile(p).unwrap().matches(t)
    }

    #[test]
    fn star_spans_dots_and_shapes_agree_with_the_general_matcher() {
        assert!(m("job.*", "job.a.b"));
        assert!(m("job.*", "job."));
        assert!(!m("job.*", "jobs.a"));
        assert!(m("*.prod", "job.deploy.prod"));
        assert!(m("*", ""));
        assert!(m("job.echo", "job.echo"));
        assert!(!m("job.echo", "job.Echo"));
        assert!(m(" job.echo ", "job.echo"));
        assert!(m("job.?", "job.a"));
        assert!(!m("job.?", "job.ab"));
        assert!(m("job.[ab].x", "job.b.x"));
        assert!(!m("job.[!ab].x", "job.b.x"));
        assert!(m("job.*.prod", "job.deploy.eu.prod"));
        assert!(m("job.{a,b}", "job.b"));
        assert!(m(r"job.\*", "job.*"));
        assert!(!m(r"job.\*", "job.x"));
        for (p, t) in [
            ("job.*", "job.x.y"),
            ("*.prod", "a.prod"),
            ("x", "x"),
            ("*", "q"),
        ] {
            let general = GlobBuilder::new(p)
                .literal_separator(false)
                .build()
                .unwrap();
            assert_eq!(m(p, t), general.compile_matcher().is_match(t), "{p} vs {t}");
        }
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(TopicPattern::compile("  ").is_err());
        assert!(TopicPattern::compile("job.[a").is_err());
        assert!(TopicPattern::compile("job.{a,b").is_err());
    }
}
