//! `vessel-vmm`: the microVM monitor binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    match vessel_vmm::profile::HostProfile::detect() {
        Ok(profile) => eprintln!(
            "vessel-vmm: booting guests is not implemented yet (host profile: {profile}); \
             use the QEMU reference runner, see README.md"
        ),
        Err(err) => eprintln!("vessel-vmm: {err}"),
    }
    ExitCode::FAILURE
}
