//! LFS pointer files (git-lfs `docs/spec.md`): the small blobs that stand in for an object.
//!
//! ```text
//! version https://git-lfs.github.com/spec/v1
//! oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393
//! size 12345
//! ```
//!
//! Only blobs under [`MAX_POINTER_SIZE`] bytes are read, as git-lfs does: a pointer is never
//! larger, and reading every blob of a history would cost more than the scan.

/// Blobs of this size or more are never pointers (`blobSizeCutoff` in git-lfs).
pub const MAX_POINTER_SIZE: usize = 1024;

/// Every version string git-lfs accepts: the current one and the two it still reads.
const VERSIONS: [&str; 3] = [
    "https://git-lfs.github.com/spec/v1",
    "https://hawser.github.com/spec/v1",
    "http://git-media.io/v/2",
];

/// One LFS object as a pointer names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pointer {
    /// The object's SHA-256, 64 lowercase hex digits.
    pub oid: String,
    pub size: u64,
}

/// Returns the pointer that `data` is, or `None` for any other blob.
///
/// The spec's grammar: UTF-8 `key value` lines each ending in `\n`, `version` first, the other
/// keys sorted and unique, `oid` and `size` required; extension lines (`ext-0-name ...`) and
/// other keys are allowed and ignored here.
pub fn parse(data: &[u8]) -> Option<Pointer> {
    if data.len() >= MAX_POINTER_SIZE || !data.ends_with(b"\n") {
        return None;
    }
    let text = std::str::from_utf8(data).ok()?;
    let mut lines = text[..text.len() - 1].split('\n');
    let version = lines.next()?.strip_prefix("version ")?;
    if !VERSIONS.contains(&version) {
        return None;
    }
    let (mut oid, mut size) = (None, None);
    let mut previous_key: Option<&str> = None;
    for line in lines {
        let (key, value) = line.split_once(' ')?;
        if key.is_empty() || previous_key.is_some_and(|p| p >= key) {
            return None;
        }
        previous_key = Some(key);
        match key {
            "oid" => {
                let hex = value.strip_prefix("sha256:")?;
                let valid = hex.len() == 64
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !valid {
                    return None;
                }
                oid = Some(hex.to_owned());
            }
            "size" => {
                let digits_only = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
                if !digits_only {
                    return None;
                }
                size = Some(value.parse().ok()?);
            }
            _ => {}
        }
    }
    Some(Pointer {
        oid: oid?,
        size: size?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OID: &str = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393";

    fn pointer(version: &str) -> String {
        format!("version {version}\noid sha256:{OID}\nsize 12345\n")
    }

    #[test]
    fn every_accepted_version_parses() {
        for version in VERSIONS {
            assert_eq!(
                parse(pointer(version).as_bytes()),
                Some(Pointer {
                    oid: OID.to_owned(),
                    size: 12345
                }),
                "{version}"
            );
        }
    }

    #[test]
    fn extensions_are_allowed() {
        let text = format!(
            "version https://git-lfs.github.com/spec/v1\next-0-foo sha256:{OID}\n\
             oid sha256:{OID}\nsize 3\n"
        );
        assert_eq!(parse(text.as_bytes()).map(|p| p.size), Some(3));
    }

    #[test]
    fn other_blobs_are_not_pointers() {
        let cases = [
            String::new(),
            "hello\n".to_owned(),
            pointer("https://example.com/spec/v9"),
            pointer("https://git-lfs.github.com/spec/v1")
                .trim_end()
                .to_owned(),
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\n"),
            "version https://git-lfs.github.com/spec/v1\nsize 1\n".to_owned(),
            format!("version https://git-lfs.github.com/spec/v1\nsize 1\noid sha256:{OID}\n"),
            format!("version https://git-lfs.github.com/spec/v1\noid sha1:{OID}\nsize 1\n"),
            format!(
                "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 1\n",
                OID.to_uppercase()
            ),
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize -1\n"),
            format!("version https://git-lfs.github.com/spec/v1\r\noid sha256:{OID}\nsize 1\n"),
            format!("oid sha256:{OID}\nversion https://git-lfs.github.com/spec/v1\nsize 1\n"),
        ];
        for case in cases {
            assert_eq!(parse(case.as_bytes()), None, "{case:?}");
        }
        let mut large = pointer("https://git-lfs.github.com/spec/v1").into_bytes();
        large.splice(0..0, std::iter::repeat_n(b'x', MAX_POINTER_SIZE));
        assert_eq!(parse(&large), None);
    }
}
