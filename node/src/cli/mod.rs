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
    let data = crate::store::DataDir::new(dir);
    if data.is_initialised() {
        return Ok(data);
    }
    eprintln!(
        "error: {}",
        crate::store::StoreError::NotInitialised {
            dir: dir.to_path_buf()
        }
    );
    Err(std::process::ExitCode::from(EXIT_USAGE))
}
