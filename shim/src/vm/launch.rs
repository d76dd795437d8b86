//! What the config makes of a pod's guest: the [`BootSpec`] every pod VM
//! of this config shares, and the template it is restored from.

use std::path::Path;
use std::time::Duration;

use vessel_agent_protocol::contract::{self, SHARE_TAG};
use vessel_vmm_client::template::{self, Template, TemplateCache, TemplateError};
use vessel_vmm_client::{BootSpec, FsSpec, JailSpec, VmmCommand};

use crate::config::VesselConfig;

/// The VMM binary of `config`.
pub fn vmm(config: &VesselConfig) -> VmmCommand {
    VmmCommand::new(config.vmm_binary()).with_jail(JailSpec {
        disabled: !config.jail,
        debug_api: config.vmm_debug_api,
        ..JailSpec::default()
    })
}

/// The guest of `config`'s pod VMs, its share at `share`, without
/// `vessel.share=` on its command line: a template's guest must not mount
/// the share (a restored guest gets MountShare instead; a booted one gets
/// [`boot_cmdline`]).
pub fn guest(config: &VesselConfig, share: &Path) -> BootSpec {
    let mut guest = BootSpec::new(&config.kernel, &config.initrd);
    guest.vcpus = config.vcpus;
    guest.memory_mib = config.memory_mib;
    guest.cmdline = contract::log_arg(&config.log_level);
    if config.debug_console {
        guest.cmdline.push_str(" loglevel=7");
    }
    guest.fs = Some(FsSpec::new(share, SHARE_TAG));
    guest
}

/// The command line of a booted pod guest: `guest`'s, and the share
/// mounted at boot.
pub fn boot_cmdline(guest: &BootSpec) -> String {
    format!("{} {}", contract::share_arg(SHARE_TAG), guest.cmdline)
}

/// The template for `guest`: from the config's cache, or booted and
/// snapshotted now (blocking; other shims wait for the same one). Its
/// maker's sockets live in the state directory: the template directory's
/// paths are too long for a socket's address.
pub fn template(config: &VesselConfig, guest: &BootSpec) -> Result<Template, TemplateError> {
    let work = config
        .state_dir
        .join(format!("template-{}", std::process::id()));
    template::get_or_make(
        &TemplateCache::new(&config.template_dir),
        &vmm(config),
        guest,
        &work,
        Duration::from_secs(config.boot_timeout_secs),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_follows_the_config_and_leaves_the_share_unmounted() {
        let mut config = VesselConfig {
            kernel: "/k/vmlinux".into(),
            initrd: "/k/agent.cpio".into(),
            vcpus: 2,
            memory_mib: 256,
            ..VesselConfig::default()
        };
        let spec = guest(&config, Path::new("/s/shared"));
        assert_eq!(spec.cmdline, "vessel.log=info");
        assert_eq!((spec.vcpus, spec.memory_mib), (2, 256));
        assert_eq!(spec.fs, Some(FsSpec::new("/s/shared", "vessel")));
        assert_eq!(boot_cmdline(&spec), "vessel.share=vessel vessel.log=info");
        config.debug_console = true;
        config.log_level = "debug".into();
        assert_eq!(
            guest(&config, Path::new("/s")).cmdline,
            "vessel.log=debug loglevel=7"
        );
    }

    #[test]
    fn the_vmm_is_the_configs() {
        let config = VesselConfig {
            vmm: "/opt/vessel-vmm".into(),
            ..VesselConfig::default()
        };
        assert_eq!(vmm(&config).binary(), Path::new("/opt/vessel-vmm"));
    }
}
