//! `pushmirror completions SHELL`: shell completions generated from the clap definitions, and
//! the packaging step that writes them with the man page `pushmirror(1)` (and one page per
//! subcommand, which it refers to) into a directory.
//!
//! Both are generated from the same `clap::Command` as the parser (built in `main.rs`), so
//! they cannot drift from the options the binary accepts.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

pub use clap_complete::Shell;

use super::{EXIT_FAILED, EXIT_OK};

/// The shells whose completions the package ships, with the file name each one loads.
const PACKAGED: [(Shell, &str); 3] = [
    (Shell::Bash, "pushmirror.bash"),
    (Shell::Zsh, "_pushmirror"),
    (Shell::Fish, "pushmirror.fish"),
];

/// Prints the completions of `command` for `shell` to `out`.
pub fn run(mut command: clap::Command, shell: Shell, out: &mut impl Write) -> u8 {
    // Generated into memory first: clap_complete panics on a write error, and a reader that
    // stops early (`| head`, `| grep -q`) is not one.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "pushmirror", &mut script);
    match out.write_all(&script).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => EXIT_FAILED,
        _ => EXIT_OK,
    }
}

/// Writes the man pages `pushmirror.1` and `pushmirror-SUBCOMMAND.1` and the bash, zsh and fish completions of `command`
/// into `dir` (made if missing): what the Debian package installs.
pub fn write_assets(command: clap::Command, dir: &Path, err: &mut impl Write) -> u8 {
    match try_write_assets(command, dir) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "error: cannot write into {}: {e}", dir.display());
            EXIT_FAILED
        }
    }
}

fn try_write_assets(mut command: clap::Command, dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    // `pushmirror.1` lists the subcommands as `pushmirror-sync(1)` and so on: write those too.
    // Not `pushmirror-help-*.1`: `help` is clap's, not a subcommand worth a page.
    let mut pages = command.clone().disable_help_subcommand(true);
    pages.build();
    clap_mangen::generate_to(pages, dir)?;
    for (shell, file) in PACKAGED {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command, "pushmirror", &mut script);
        fs::write(dir.join(file), script)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> clap::Command {
        clap::Command::new("pushmirror")
            .subcommand(clap::Command::new("status").about("Shows each mirror's status"))
    }

    #[test]
    fn prints_the_completions_of_one_shell() {
        let mut out = Vec::new();
        assert_eq!(run(command(), Shell::Fish, &mut out), EXIT_OK);
        let script = String::from_utf8(out).expect("utf-8");
        assert!(script.contains("complete -c pushmirror"), "{script}");
    }

    #[test]
    fn writes_the_man_page_and_three_completions() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(
            write_assets(command(), dir.path(), &mut Vec::new()),
            EXIT_OK
        );
        let page = fs::read_to_string(dir.path().join("pushmirror.1")).expect("man page");
        assert!(page.contains(".TH pushmirror 1"), "{page}");
        assert!(dir.path().join("pushmirror-status.1").is_file());
        let bash = fs::read_to_string(dir.path().join("pushmirror.bash")).expect("bash");
        assert!(bash.contains("status"), "{bash}");
        assert!(dir.path().join("_pushmirror").is_file());
        assert!(dir.path().join("pushmirror.fish").is_file());
    }
}
