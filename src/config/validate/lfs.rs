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
