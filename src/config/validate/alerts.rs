//! The `[alerts]` table (SPEC.md sections 3 and 11): where the events of a mirror entering
//! `failed` and recovering are sent.
//!
//! Every problem here is an error of the file: alerts exist to be told of failures, so a
//! table that cannot deliver them (a URL that is not HTTP, a token file readable by others, an
//! empty command) must stop the load rather than fail silently later.

use std::os::unix::fs::PermissionsExt;

use toml::Spanned;

use super::super::AlertsConfig;
use super::super::raw::RawAlerts;
use super::Checker;
use crate::mirror::credentials::too_open;

impl Checker<'_> {
    /// Validates `[alerts]`; returns it when it has no error.
    pub(super) fn alerts(&mut self, table: Spanned<RawAlerts>) -> Option<AlertsConfig> {
        let span = table.span();
        let raw = table.into_inner();
        let errors_before = self.errors.len();
        let webhook_url = raw.webhook_url.and_then(|url| self.webhook_url(url));
        let webhook_token_file = raw.webhook_token_file.and_then(|file| {
            let setting = self.path_value("webhook_token_file", &file)?;
            self.check_token_file(&setting.value, &setting.span);
            Some(setting.value)
        });
        let command = raw.command.map(|command| self.alert_command(command));
        if webhook_url.is_none()
            && webhook_token_file.is_some()
            && self.errors.len() == errors_before
        {
            self.error(&span, "`webhook_token_file` is set without `webhook_url`");
        }
        if webhook_url.is_none() && command.is_none() && self.errors.len() == errors_before {
            self.error(
                &span,
                "[alerts] needs `webhook_url` or `command` (or both): where the events go",
            );
        }
        (self.errors.len() == errors_before).then(|| AlertsConfig {
            webhook_url,
            webhook_token_file,
            command: command.unwrap_or_default(),
        })
    }

    /// Returns the webhook URL if it is an absolute `http://` or `https://` URL.
    fn webhook_url(&mut self, url: Spanned<String>) -> Option<String> {
        let text = url.get_ref();
        match reqwest::Url::parse(text) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {
                Some(url.into_inner())
            }
            Ok(parsed) => {
                self.error(
                    &url.span(),
                    format!(
                        "`webhook_url` must be an http:// or https:// URL, not {}://",
                        parsed.scheme()
                    ),
                );
                None
            }
            Err(why) => {
                self.error(&url.span(), format!("`webhook_url` is not a URL: {why}"));
                None
            }
        }
    }

    /// Reports a token file that is missing, unreadable, or open to group or others (the
    /// rules of `password_file`).
    fn check_token_file(&mut self, path: &std::path::Path, span: &std::ops::Range<usize>) {
        let shown = path.display();
        let message = match std::fs::metadata(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                format!("webhook_token_file {shown} does not exist")
            }
            Err(error) => format!("cannot read webhook_token_file {shown}: {error}"),
            Ok(meta) if !meta.is_file() => {
                format!("webhook_token_file {shown} is not a regular file")
            }
            Ok(meta) if too_open(meta.permissions().mode()) => format!(
                "refusing webhook_token_file {shown}: it is readable by group or others (mode \
                 {:04o}); chmod 600 it",
                meta.permissions().mode() & 0o7777
            ),
            Ok(_) => match std::fs::File::open(path) {
                Ok(_) => return,
                Err(error) => format!("cannot read webhook_token_file {shown}: {error}"),
            },
        };
        self.error(span, message);
    }

    /// Returns the command's argv; a program written with a `/` is resolved against the
    /// file's directory.
    fn alert_command(&mut self, command: Spanned<Vec<Spanned<String>>>) -> Vec<String> {
        let span = command.span();
        let mut argv: Vec<String> = command
            .into_inner()
            .into_iter()
            .map(Spanned::into_inner)
            .collect();
        match argv.first_mut() {
            None => self.error(&span, "`command` is empty: name a program to run"),
            Some(program) if program.is_empty() => {
                self.error(&span, "`command`'s program is empty")
            }
            Some(program) if program.contains('/') => {
                let resolved = crate::paths::resolve(self.base_dir, program.as_str());
                *program = resolved.display().to_string();
            }
            Some(_) => {}
        }
        argv
    }
}
