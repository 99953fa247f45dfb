//! The Git LFS keys of a mirror (SPEC.md sections 3 and 9): `lfs`, `lfs_url`, `lfs_objects`,
//! in a mirror or in `[defaults]`.
//!
//! `lfs_url` must be http(s) and carry no credentials: the batch request is sent with the
//! mirror's own `username` and password, which are secrets kept out of URLs (a URL is shown
//! in status and logs). Whether the store exists is not checked here: `lfs = "auto"` looks at
//! each update, and `lfs = "on"` fails that update with what to fix.

use std::path::PathBuf;

use toml::Spanned;

use super::{CheckedIdentity, Checker, Options, Setting};
use crate::config::raw::RawLfsMode;
use crate::config::{LfsMode, LfsSettings};
use crate::mirror::lfs::endpoint::default_lfs_url;
use crate::mirror::url::RemoteUrl;

/// The LFS options of one level, validated.
type LfsOptions = (
    Option<Setting<LfsMode>>,
    Option<Setting<String>>,
    Option<Setting<PathBuf>>,
);

impl Checker<'_> {
    /// Validates `lfs`, `lfs_url` and `lfs_objects` as written at one level.
    pub(super) fn lfs_options(
        &mut self,
        mode: Option<Spanned<RawLfsMode>>,
        url: Option<Spanned<String>>,
        objects: Option<Spanned<String>>,
    ) -> LfsOptions {
        let mode = mode.map(|mode| {
            let span = mode.span();
            let value = match mode.into_inner() {
                RawLfsMode::Auto => LfsMode::Auto,
                RawLfsMode::On => LfsMode::On,
                RawLfsMode::Off => LfsMode::Off,
            };
            Setting { value, span }
        });
        let url = url.and_then(|url| self.lfs_url(url));
        let objects = objects
            .as_ref()
            .and_then(|objects| self.path_value("lfs_objects", objects));
        (mode, url, objects)
    }

    /// Returns `lfs_url` if it is an http(s) URL without credentials, reporting it otherwise.
    fn lfs_url(&mut self, url: Spanned<String>) -> Option<Setting<String>> {
        let span = url.span();
        let text = url.into_inner();
        let trimmed = text.trim();
        let parsed = RemoteUrl::parse(trimmed);
        if trimmed.is_empty() || !parsed.is_http() {
            self.error(
                &span,
                format!(
                    "`lfs_url` must be an http:// or https:// URL, not {:?}",
                    parsed.display(false)
                ),
            );
            return None;
        }
        if parsed.user().is_some() || parsed.password().is_some() {
            self.error(
                &span,
                "`lfs_url` must not carry credentials: the LFS server is sent the mirror's \
                 `username` and password (`password_file`, `password_env`)",
            );
            return None;
        }
        Some(Setting {
            value: trimmed.trim_end_matches('/').to_owned(),
            span,
        })
    }
}

/// Returns the LFS settings of a mirror: its own keys, else those of `[defaults]`, else the
/// defaults (`auto`, the endpoint derived from `url`, `<repo>/lfs/objects`).
pub(super) fn lfs_settings(
    identity: &CheckedIdentity,
    own: &Options,
    defaults: &Options,
) -> LfsSettings {
    let mode = own
        .lfs
        .as_ref()
        .or(defaults.lfs.as_ref())
        .map_or(LfsMode::Auto, |m| m.value);
    let url = own
        .lfs_url
        .as_ref()
        .or(defaults.lfs_url.as_ref())
        .map(|u| u.value.clone())
        .or_else(|| default_lfs_url(&identity.url));
    let objects = own
        .lfs_objects
        .as_ref()
        .or(defaults.lfs_objects.as_ref())
        .map_or_else(
            || identity.repo.join("lfs").join("objects"),
            |o| o.value.clone(),
        );
    LfsSettings { mode, url, objects }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, LfsMode};

    fn load(dir: &std::path::Path, text: &str) -> Result<Config, String> {
        git2::Repository::init_bare(dir.join("a.git")).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_settings() {
        let dir = tempfile::tempdir().unwrap();
        let config = load(
            dir.path(),
            "[defaults]\nlfs = \"on\"\n[[mirror]]\nname = \"a\"\nrepo = \"a.git\"\n\
             url = \"git@host:org/a.git\"\n[[mirror]]\nname = \"b\"\nrepo = \"a.git\"\n\
             url = \"./down.git\"\nlfs = \"off\"\nlfs_url = \"https://lfs.example/x/\"\n\
             lfs_objects = \"store\"\n",
        )
        .unwrap();
        let (a, b) = (&config.mirrors[0].lfs, &config.mirrors[1].lfs);
        assert_eq!(a.mode, LfsMode::On);
        assert_eq!(a.url.as_deref(), Some("https://host/org/a.git/info/lfs"));
        assert_eq!(a.objects, dir.path().join("a.git/lfs/objects"));
        assert_eq!(b.mode, LfsMode::Off);
        assert_eq!(b.url.as_deref(), Some("https://lfs.example/x"));
        assert_eq!(b.objects, dir.path().join("store"));
    }

    #[test]
    fn bad_values_are_errors_with_their_position() {
        let dir = tempfile::tempdir().unwrap();
        let error = load(
            dir.path(),
            "[[mirror]]\nname = \"a\"\nrepo = \"a.git\"\nurl = \"./d.git\"\n\
             lfs_url = \"https://u:secret-token@lfs.example/x\"\n[[mirror]]\nname = \"b\"\n\
             repo = \"a.git\"\nurl = \"./d.git\"\nlfs_url = \"ssh://host/x\"\nlfs = \"yes\"\n\
             lfs_objects = \"\"\n",
        )
        .unwrap_err();
        assert!(
            error.contains("c.toml:5:11: `lfs_url` must not carry credentials"),
            "{error}"
        );
        assert!(!error.contains("secret-token"), "{error}");
        assert!(
            error.contains("c.toml:10:11: `lfs_url` must be an http:// or https:// URL"),
            "{error}"
        );
        assert!(
            error.contains("c.toml:11:7: `lfs`: unknown variant `yes`"),
            "{error}"
        );
        assert!(
            error.contains("c.toml:12:15: `lfs_objects` is empty"),
            "{error}"
        );
    }
}
