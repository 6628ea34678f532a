//! Which databases and schemas a run covers: it grants its levels inside the
//! scope, and withdraws what its roles hold outside it.

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(text) = text.strip_prefix(head) else { return false };
            (0..=text.len()).filter(|&i| text.is_char_boundary(i)).any(|i| glob(rest, &text[i..]))
        }
    }
}

/// Names an include pattern matches (every name, with none), less those an exclude pattern matches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Globs {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl Globs {
    pub fn covers(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|pattern| glob(pattern, name)))
            && !self.exclude.iter().any(|pattern| glob(pattern, name))
    }

    /// Covers no name.
    pub fn nothing() -> Self {
        Self { include: Vec::new(), exclude: vec!["*".into()] }
    }

    pub fn is_everything(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }
}

/// The databases, and the schemas in them, a run covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub databases: Globs,
    pub schemas: Globs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_then_excludes() {
        let globs = Globs { include: vec!["app*".into(), "orders".into()], exclude: vec!["*_tmp".into()] };
        assert!(globs.covers("app") && globs.covers("app_eu") && globs.covers("orders"));
        assert!(!globs.covers("app_tmp") && !globs.covers("billing") && !globs.covers("orders2"));
        assert!(Globs::default().covers("anything"));
        let everything_but = Globs { include: Vec::new(), exclude: vec!["legacy".into()] };
        assert!(everything_but.covers("app") && !everything_but.covers("legacy"));
    }
}
