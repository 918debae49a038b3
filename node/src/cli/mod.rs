//! Subcommands of the `fedmmkt` binary, one module each.

pub mod bench;
pub mod init;
pub mod peers;
pub mod privacy;
pub mod run;
pub mod simulate;
pub mod status;

/// Exit code for bad arguments or a data directory in the wrong state (same as clap's usage errors).
pub const EXIT_USAGE: u8 = 2;

/// The node directory `dir`, or (after printing why) the usage exit code when it is not initialised.
pub fn initialised_dir(
    dir: &std::path::Path,
) -> Result<crate::store::DataDir, std::process::ExitCode> {
    let path = match crate::paths::UserPath::from_cwd("--data-dir", dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(std::process::ExitCode::from(EXIT_USAGE));
        }
    };
    let data = crate::store::DataDir::new(path.resolved());
    if data.is_initialised() {
        return Ok(data);
    }
    eprintln!(
        "error: --data-dir {path} is not an initialised fedmmkt data directory (run `fedmmkt init --data-dir {}` first)",
        dir.display()
    );
    Err(std::process::ExitCode::from(EXIT_USAGE))
}
