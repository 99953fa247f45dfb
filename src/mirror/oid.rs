//! Object names read from git's output (`ls-remote`, `rev-list`, `cat-file`): 40 hex digits
//! in a SHA-1 repository, 64 in a SHA-256 one.
//!
//! Why a helper: `git2::Oid::from_str` always parses SHA-1 and accepts a prefix shorter than
//! 40 digits, padding it with zeros; a SHA-256 name is then refused and a truncated line
//! would silently become another object. The format follows from the length alone, which is
//! all git's plumbing output tells us.
//!
//! A mirror needs both sides in one format: git refuses to push between formats, and an
//! object name of the other format must never reach libgit2 (which reads it past its end),
//! so the remote's advertised names are checked against the local repository's format
//! before anything is planned ([`foreign_ref`]).

use std::collections::BTreeMap;
use std::path::Path;

use git2::{ObjectFormat, Oid};

/// A string that is not a whole object name (the callers say where it was read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an object name of 40 or 64 hex digits")]
pub struct NotAnObjectName;

/// Returns the object named by `hex`: exactly 40 hex digits (SHA-1) or 64 (SHA-256), either
/// case. A `Result`, as `Oid::from_str` returns, so that a call site changes in one place.
/// Decoded here rather than by libgit2's parser: `ls-remote` of 100,000 refs parses 100,000
/// names on the path that waits for the remote.
pub fn parse_hex(hex: &str) -> Result<Oid, NotAnObjectName> {
    let hex = hex.as_bytes();
    if hex.len() != 40 && hex.len() != 64 {
        return Err(NotAnObjectName);
    }
    let mut raw = [0u8; 32];
    for (byte, pair) in raw.iter_mut().zip(hex.chunks_exact(2)) {
        let (high, low) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
        if high > 15 || low > 15 {
            return Err(NotAnObjectName);
        }
        *byte = (high << 4) | low;
    }
    // 20 bytes make a SHA-1 name, 32 a SHA-256 one.
    Oid::from_bytes(&raw[..hex.len() / 2]).map_err(|_| NotAnObjectName)
}

/// The value of each hex digit (either case); 255 for any other byte.
const HEX: [u8; 256] = {
    let mut table = [255u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Returns the object format of the repository whose git directory is `git_dir`, as its own
/// `config` says (`extensions.objectformat`; SHA-1 when absent or unreadable, as git assumes).
pub fn repository_format(git_dir: &Path) -> ObjectFormat {
    let format = git2::Config::open(&git_dir.join("config"))
        .and_then(|config| config.get_string("extensions.objectformat"));
    match format {
        Ok(name) if name.trim().eq_ignore_ascii_case("sha256") => ObjectFormat::Sha256,
        _ => ObjectFormat::Sha1,
    }
}

/// Returns the first of `refs` whose object name is not in `format`, with its value.
pub fn foreign_ref(refs: &BTreeMap<String, Oid>, format: ObjectFormat) -> Option<(&str, Oid)> {
    refs.iter()
        .find(|(_, oid)| oid.object_format() != format)
        .map(|(name, oid)| (name.as_str(), *oid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_and_sha256_names_parse_by_length() {
        let sha1 = "0123456789abcdef0123456789ABCDEF01234567";
        let oid = parse_hex(sha1).expect("a SHA-1 name");
        assert_eq!(oid.object_format(), ObjectFormat::Sha1);
        assert_eq!(oid.to_string(), sha1.to_ascii_lowercase());

        let sha256 = "0da5f1f7eb949feddf226b407d1f20ff0b8382700aa7a8cf4fce6e5858d7185a";
        let oid = parse_hex(sha256).expect("a SHA-256 name");
        assert_eq!(oid.object_format(), ObjectFormat::Sha256);
        assert_eq!(oid.to_string(), sha256);
        assert_eq!(oid.as_bytes().len(), 32);
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "0123",
            "0123456789abcdef0123456789abcdef0123456",
            "0123456789abcdef0123456789abcdef012345678",
            "0123456789abcdef0123456789abcdef0123456g",
            " 123456789abcdef0123456789abcdef01234567",
            &"a".repeat(63),
            &"a".repeat(65),
        ] {
            assert_eq!(parse_hex(bad), Err(NotAnObjectName), "{bad:?}");
        }
    }

    #[test]
    fn the_zero_names_of_both_formats_are_distinct() {
        let sha1 = parse_hex(&"0".repeat(40)).expect("zero SHA-1");
        let sha256 = parse_hex(&"0".repeat(64)).expect("zero SHA-256");
        assert!(sha1.is_zero() && sha256.is_zero());
        assert_eq!(sha1, Oid::ZERO_SHA1);
        assert_eq!(sha256, Oid::ZERO_SHA256);
        assert_ne!(sha1, sha256);
    }

    #[test]
    fn a_remote_ref_of_the_other_format_is_found() {
        let sha1 = parse_hex(&"1".repeat(40)).expect("SHA-1");
        let sha256 = parse_hex(&"2".repeat(64)).expect("SHA-256");
        let refs: BTreeMap<String, Oid> = [
            ("refs/heads/a".to_owned(), sha1),
            ("refs/heads/b".to_owned(), sha256),
        ]
        .into();
        assert_eq!(
            foreign_ref(&refs, ObjectFormat::Sha1),
            Some(("refs/heads/b", sha256))
        );
        assert_eq!(
            foreign_ref(&refs, ObjectFormat::Sha256),
            Some(("refs/heads/a", sha1))
        );
        assert_eq!(foreign_ref(&BTreeMap::new(), ObjectFormat::Sha1), None);
    }

    #[test]
    fn the_format_is_read_from_the_repository_config() {
        let dir = tempfile::tempdir().expect("temporary directory");
        assert_eq!(repository_format(dir.path()), ObjectFormat::Sha1);
        std::fs::write(
            dir.path().join("config"),
            "[core]\n\trepositoryformatversion = 1\n[extensions]\n\tobjectformat = sha256\n",
        )
        .expect("config");
        assert_eq!(repository_format(dir.path()), ObjectFormat::Sha256);
    }
}
