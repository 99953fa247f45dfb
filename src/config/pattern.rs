//! GitLab's protected-branch patterns (`protected_branches`).
//!
//! A pattern is an exact branch name, or contains `*` wildcards that match any run of
//! characters, `/` included, the whole name being matched (GitLab's `RefMatcher`). So
//! `release/*` matches `release/1.0` and `release/a/b` but not `release`, and `*-stable`
//! matches `9-stable`. Splitting on `*` is enough; no regex is built, so no pattern can be
//! slow or invalid.

/// One protected-branch pattern, matched against branch names without `refs/heads/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchPattern(String);

impl BranchPattern {
    /// Returns the pattern for `pattern`; every string is a valid pattern.
    pub fn new(pattern: &str) -> BranchPattern {
        BranchPattern(pattern.to_owned())
    }

    /// Returns the pattern as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns true if the pattern contains a `*` wildcard.
    pub fn is_wildcard(&self) -> bool {
        self.0.contains('*')
    }

    /// Returns true if the branch name (without `refs/heads/`) matches.
    pub fn matches(&self, branch: &str) -> bool {
        let Some((head_and_middle, last)) = self.0.rsplit_once('*') else {
            return self.0 == branch;
        };
        let mut parts = head_and_middle.split('*');
        let first = parts.next().unwrap_or_default();
        // Anchor both ends first; stripping the suffix from what follows the prefix keeps the
        // two from overlapping (`a*a` does not match `a`).
        let Some(rest) = branch.strip_prefix(first) else {
            return false;
        };
        let Some(mut rest) = rest.strip_suffix(last) else {
            return false;
        };
        // Each middle part at its leftmost occurrence: with `*` as the only wildcard, taking
        // the earliest match never loses one that a later choice would have found.
        for part in parts {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

impl std::fmt::Display for BranchPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, matching: &[&str], not_matching: &[&str]) {
        let p = BranchPattern::new(pattern);
        for branch in matching {
            assert!(p.matches(branch), "{pattern} should match {branch}");
        }
        for branch in not_matching {
            assert!(!p.matches(branch), "{pattern} should not match {branch}");
        }
    }

    #[test]
    fn exact_name() {
        check("main", &["main"], &["mainline", "xmain", "", "Main"]);
        check(
            "release/1.0",
            &["release/1.0"],
            &["release/1.0.1", "release"],
        );
        assert!(!BranchPattern::new("main").is_wildcard());
    }

    #[test]
    fn trailing_star_crosses_slashes() {
        check(
            "release/*",
            &["release/1.0", "release/a/b", "release/"],
            &["release", "releases/1.0", "xrelease/1.0"],
        );
        assert!(BranchPattern::new("release/*").is_wildcard());
    }

    #[test]
    fn leading_star() {
        check(
            "*-stable",
            &["9-stable", "-stable", "a/b-stable"],
            &["9-stable-x", "stable"],
        );
    }

    #[test]
    fn middle_and_several_stars() {
        check(
            "feature/*/done",
            &["feature/x/done", "feature/a/b/done", "feature//done"],
            &["feature/done", "feature/x/done/not"],
        );
        check(
            "a*b*c",
            &["abc", "aXbYc", "abbc", "acbc"],
            &["ab", "acb", "ba c"],
        );
        check("a*a", &["aa", "aXa", "aaa"], &["a"]);
        check("**", &["", "anything/at/all"], &[]);
        check("*", &["", "main", "release/1.0"], &[]);
        check("x**y", &["xy", "x/y"], &["x"]);
    }

    #[test]
    fn no_regex_meaning() {
        check("v1.0", &["v1.0"], &["v1x0"]);
        check("a+(b)", &["a+(b)"], &["aab"]);
    }
}
