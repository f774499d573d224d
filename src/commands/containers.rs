//! `vzpkg containers`: what `@all` stands for — each container vzpkg finds, with its kind,
//! whether it runs, its package manager and its root.

use std::io::Write;

use anyhow::Result;

use crate::config::FileConfig;
use crate::container::{discover, Container, Kind};
use crate::untrusted::{json_text, printable};

pub fn run(json: bool, file: &FileConfig) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(out, "{:24}  {:7}  {:8}  {:8}  ROOT", "NAME", "KIND", "STATE", "BACKEND")?;
    }
    for spec in discover::all(file) {
        let kind = kind_of(&spec, file);
        let (state, backend, root, error) = match Container::resolve(&spec, file) {
            Ok(container) => {
                let state = match container.kind {
                    Kind::Running { pid } => format!("running (pid {pid})"),
                    Kind::StoppedRoot => "stopped".to_string(),
                };
                let (backend, error) = match crate::backend::detect(&container, None) {
                    Ok(backend) => (Some(backend.name().to_string()), None),
                    Err(e) => (None, Some(format!("{e:#}"))),
                };
                (state, backend, Some(container.root_path.display().to_string()), error)
            }
            Err(e) => ("unreachable".to_string(), None, None, Some(format!("{e:#}"))),
        };
        if json {
            let line = serde_json::json!({
                "name": spec, "kind": kind, "state": state, "backend": backend, "root": root, "error": error,
            });
            writeln!(out, "{}", json_text(&line))?;
        } else {
            let root = root.or(error).unwrap_or_default();
            writeln!(
                out,
                "{:24}  {:7}  {:8}  {:8}  {}",
                printable(&spec, 60),
                kind,
                state,
                backend.as_deref().unwrap_or("-"),
                printable(&root, 300)
            )?;
        }
    }
    out.flush()?;
    Ok(0)
}

/// How the spec reaches its container: `dir`, `pid`, `lxc`, `nspawn` or `openvz`.
fn kind_of(spec: &str, file: &FileConfig) -> String {
    let target = match file.containers.get(spec) {
        Some(path) if !spec.contains(':') => path.to_string_lossy().into_owned(),
        _ => spec.to_string(),
    };
    match target.split_once(':') {
        Some((kind, _)) if !target.starts_with('/') => kind.to_string(),
        _ => "dir".to_string(),
    }
}
