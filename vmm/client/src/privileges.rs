//! What a vessel-vmm keeps of root's privileges, for the VMM to enforce
//! (`vessel_vmm::privileges`) and for whoever starts one to check: the
//! capabilities of a VMM with a share (none without one), by their names
//! in `capabilities(7)`. Every VMM thread also has `no_new_privs`.

/// The capabilities a VMM serving a virtio-fs share keeps, and why:
/// passthrough acts for guest users on host files it does not own (the DAC
/// overrides, chown, fowner), creates files as the guest's caller
/// (setfsuid/setfsgid), and the API's `fs_add`/`fs_remove` mount in the
/// share (sys_admin).
pub const SHARE_CAPABILITIES: [&str; 7] = [
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_CHOWN",
    "CAP_FOWNER",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_SYS_ADMIN",
];
