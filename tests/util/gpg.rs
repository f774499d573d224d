//! A throwaway OpenPGP key in its own GnuPG home, for signing test repositories.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::run;

pub struct Gpg {
    home: PathBuf,
}

impl Gpg {
    /// Makes a new signing key (ed25519, no passphrase) under `dir`.
    pub fn new(dir: &Path, name: &str) -> Gpg {
        std::fs::create_dir_all(dir).unwrap();
        let mut perms = std::fs::metadata(dir).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o700);
        std::fs::set_permissions(dir, perms).unwrap();
        let gpg = Gpg { home: dir.to_path_buf() };
        run(gpg
            .cmd()
            .args(["--passphrase", "", "--quick-gen-key"])
            .arg(format!("{name} <{name}@example.org>"))
            .args(["ed25519", "sign", "never"]));
        gpg
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.arg("--homedir").arg(&self.home).args(["--batch", "--yes", "--pinentry-mode", "loopback"]);
        cmd
    }

    /// The public key as a binary keyring, as apt's and vzpkg's `keyrings` take it.
    pub fn export_keyring(&self, path: &Path) {
        run(self.cmd().arg("--output").arg(path).arg("--export"));
    }

    pub fn clearsign(&self, input: &Path, output: &Path) {
        run(self.cmd().arg("--output").arg(output).arg("--clearsign").arg(input));
    }

    pub fn detach_sign(&self, input: &Path, output: &Path) {
        run(self.cmd().arg("--output").arg(output).args(["--armor", "--detach-sign"]).arg(input));
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        // The agent this home started would outlive the test otherwise.
        let _ = Command::new("gpgconf").arg("--homedir").arg(&self.home).args(["--kill", "gpg-agent"]).status();
    }
}
