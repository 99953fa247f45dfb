//! TODO(config helper): GitLab's protected-branch patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchPattern(String);

impl BranchPattern {
    pub fn new(pattern: &str) -> BranchPattern {
        BranchPattern(pattern.to_owned())
    }
    /// Returns true if the branch name (without `refs/heads/`) matches.
    pub fn matches(&self, branch: &str) -> bool {
        self.0 == branch
    }
}
