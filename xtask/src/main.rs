//! `cargo xtask assets [DIR]`: shell completions (bash, zsh, fish) and man pages (vzpkg(1) and
//! one page per subcommand) generated from the very clap definitions the binary parses with
//! (`src/cli.rs`, included here), into DIR (default `target/assets`): `completions/` and
//! `man/man1/`. contrib/install.sh installs them.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

#[allow(dead_code)] // the binary's argument types; only their clap definitions are used here
#[path = "../../src/cli.rs"]
mod cli;

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("assets") => {
            let out = args.next().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target/assets"));
            match generate(&out) {
                Ok(files) => {
                    for f in files {
                        println!("{}", f.display());
                    }
                }
                Err(e) => {
                    eprintln!("xtask: writing into {}: {e}", out.display());
                    std::process::exit(1);
                }
            }
        }
        _ => {
            eprintln!("usage: cargo xtask assets [DIR]   (shell completions and man pages, default target/assets)");
            std::process::exit(2);
        }
    }
}

/// Writes the completions and man pages under `out`; returns the files written.
fn generate(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    use clap_complete::Shell;
    let completions = out.join("completions");
    let man = out.join("man/man1");
    std::fs::create_dir_all(&completions)?;
    std::fs::create_dir_all(&man)?;
    let mut written = Vec::new();
    let mut cmd = cli::Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        written.push(clap_complete::generate_to(shell, &mut cmd, "vzpkg", &completions)?);
    }
    let cmd = cli::Cli::command();
    written.push(page(&cmd, "vzpkg", &man)?);
    for sub in cmd.get_subcommands() {
        let name = format!("vzpkg-{}", sub.get_name());
        let sub = sub.clone().name(name.clone()).version(cmd.get_version().unwrap_or_default().to_string());
        written.push(page(&sub, &name, &man)?);
    }
    Ok(written)
}

fn page(cmd: &clap::Command, name: &str, dir: &Path) -> std::io::Result<PathBuf> {
    let mut text = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut text)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, text)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Must-show 6 (in part): completions and man pages are produced, and cover the commands.
    #[test]
    fn completions_and_man_pages_are_produced() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path()).unwrap();
        let read = |rel: &str| std::fs::read_to_string(dir.path().join(rel)).unwrap();
        for rel in ["completions/vzpkg.bash", "completions/_vzpkg", "completions/vzpkg.fish"] {
            let text = read(rel);
            // fish writes long options as `-l max-size`.
            for word in ["install", "prune", "audit", "status", "max-size", "json"] {
                assert!(text.contains(word), "{rel} lacks {word}");
            }
        }
        let main = read("man/man1/vzpkg.1");
        assert!(main.starts_with(".ie") || main.contains(".TH vzpkg"), "{main}");
        let prune = read("man/man1/vzpkg-prune.1");
        assert!(prune.contains(".TH vzpkg-prune") && prune.contains("max\\-size"), "{prune}");
        for sub in ["proxy", "install", "remove", "upgrade", "update", "list", "exec", "audit", "status"] {
            assert!(files.contains(&dir.path().join(format!("man/man1/vzpkg-{sub}.1"))), "{sub}");
        }
    }
}
